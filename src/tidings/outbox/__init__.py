"""The transactional outbox: events written with the business change, relayed to a broker."""
