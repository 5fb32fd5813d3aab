"""Workflow adapter: AWS Step Functions (`step_functions.py`). The same ASL on one machine is
`deepmem.local.workflow`.
"""
