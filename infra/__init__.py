"""Configuration, AWS clients and every AWS resource as code."""
