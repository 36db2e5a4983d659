// Package falconet is the hand-written Go client for a Falconet server, on top of the stubs that
// `make generate` writes into ../api from proto/.
//
// It connects over the daemon's UNIX socket or over mutual TLS with the files `falconet certs init` writes
// (ca.crt, client.crt, client.key), and offers what an alert consumer needs: Subscribe (Falco's
// falco.outputs.service/sub, or Falconet's batched stream) with reconnect and resume after the last cursor
// seen, Get (the retained alerts) and Version. Alerts come back as the alert JSON defined in
// docs/alert-json.md, so every language prints the same bytes for the same alert.
package falconet
