"""tf_cme.evaluation"""
