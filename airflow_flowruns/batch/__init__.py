"""Many documents, one run each, in one task: the parts of ``FlowRunBatchOperator``."""
