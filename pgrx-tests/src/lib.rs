//! Integration tests live in tests/; they need a running cluster (see the Makefile).
