"""``runstream bench`` (``suite.py``) and the fault ledger's workload (``ledger.py``)."""
