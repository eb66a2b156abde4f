"""Collectors: sources turned into contract events, with a cursor committed alongside."""
