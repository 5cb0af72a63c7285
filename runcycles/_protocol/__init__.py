"""The sans-I/O protocol core: request building, outcome classification, lease and settlement decisions."""
