"""assft_core.data"""
