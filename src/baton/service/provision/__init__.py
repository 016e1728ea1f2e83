"""Provisioning: the directory (users, groups, meeting rooms, roles) changed over the API."""
