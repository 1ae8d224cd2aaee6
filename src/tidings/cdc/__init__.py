"""Change data capture: reading what a database committed from its log.

`tidings.cdc.pgoutput` decodes the records of PostgreSQL's ``pgoutput`` logical decoding
plugin (today only the ones the tableless outbox needs: Begin, Commit and Message).
"""
