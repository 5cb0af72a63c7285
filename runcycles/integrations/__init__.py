"""Optional integrations with provider SDKs and frameworks; each needs its extra."""
