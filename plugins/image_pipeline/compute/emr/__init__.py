"""The EMR backend: request builders (validated by botocore's models), the provider's operators with
failure explanations, and the cost summary."""
