"""The application: `Settings`, `Services`, `Pipeline`, jobs, auth; the FastAPI app and CLI.

Core may import retrieval, tuning, ingest; the shell (app, api, cli*) eval too; HTTP is here only.
"""
