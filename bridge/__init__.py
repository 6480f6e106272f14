"""loops-bridge: verified provider webhooks in, Loops contacts and events out."""
