"""Helpers of the conformance tests: data set, server, aas-test-engines and schemathesis runs."""
