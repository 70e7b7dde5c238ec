"""assft_core.session"""
