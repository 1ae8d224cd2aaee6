"""Embedded backends on SQLite: no server, one database file, several processes at once."""
