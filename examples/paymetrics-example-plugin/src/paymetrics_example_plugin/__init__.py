"""An example paymetrics plugin: `merchant_allowlist` (a validation rule) and
`refund_ratio_by_country` (a metric extractor). See docs/plugins.md."""
