"""HTTP routes, one module per resource; each route is a few lines over `Pipeline` and jobs.

Shell: may import serve's core, eval, retrieval, tuning, ingest; serve's core never imports it.
"""
