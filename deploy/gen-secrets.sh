#!/bin/sh
# Create deploy/secrets/{vaner_token,vaner_tls_crt,vaner_tls_key} for compose (self-signed, 1 year).
# Production: use certificates from your CA (cert-manager on Kubernetes) instead.
set -eu
cd "$(dirname "$0")"
umask 077   # the token and key are readable by their owner only (the services warn otherwise)
mkdir -p secrets
[ -s secrets/vaner_token ] || head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > secrets/vaner_token
openssl req -x509 -newkey rsa:2048 -nodes -days 365 -subj "/CN=vaner" \
  -addext "subjectAltName=DNS:kb,DNS:retrieval,DNS:tagger,DNS:localhost,IP:127.0.0.1" \
  -keyout secrets/vaner_tls_key -out secrets/vaner_tls_crt 2>/dev/null
echo "wrote deploy/secrets/ (token, tls cert, tls key)"
