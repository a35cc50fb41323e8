"""App tier: model registry, image decoding, batched classifier and the SQS queue worker."""
