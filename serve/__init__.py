"""The application: settings, wiring of the libraries, the `ragtune` command line."""
