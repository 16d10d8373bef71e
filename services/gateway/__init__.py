"""The web gateway: accounts, watches, live section updates and the student's page."""
