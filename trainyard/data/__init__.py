"""A job's code and data before it runs: code packaging into storage (`packaging`), the data
staging step (`staging`) and its expectation checks (`validation`, Great Expectations, imported
only when a check runs). It may import `manifest`, `jobs`, `storage` and `failures`; the
learner runtime never imports it.
"""
