"""tf_cme.serving"""
