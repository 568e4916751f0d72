// Package providers holds what every upstream shares: the canonical chat request view, the usage
// normal form, the error classes, and the Adapter contract that each wire format implements in
// its own sub-package (openai, and later anthropic, bedrock, vertex …). It imports no Caddy code.
package providers
