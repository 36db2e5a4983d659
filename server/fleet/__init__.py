"""The fleet (issue 13): nodes forward alerts into NATS JetStream; `falconet aggregate` serves them all.

`names` holds the contract both sides share (subjects, message ids, headers, bucket names); keep it the one
place that spells them, so a node and an aggregator of the same version always agree.
"""
