"""tf_cme.data"""
