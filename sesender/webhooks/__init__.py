"""Outbound event webhooks (Standard Webhooks): endpoints, event payloads, signing, the address
guard against server-side request forgery, and the delivery actor.

Events are written by SQL triggers in the same transaction as what they report (see the schema's
migration 7 and docs/adr/0006-webhook-events-by-trigger.md); this package only reads them back,
signs them and delivers them.
"""
