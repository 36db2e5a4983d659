"""Certificate bootstrap for Falconet's mTLS: a CA, a server and client certificates, and their inspection."""
