"""tf_cme.training"""
