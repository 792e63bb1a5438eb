"""The add-on's operators, one module per concern: import/export of results, generating takes, the backend."""
