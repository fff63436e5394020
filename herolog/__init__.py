"""herolog: ``heroku logs`` for logs you host yourself."""

__version__ = "0.1.0"
