"""``credgate console``: a browser console that runs on the reader's side (docs/console.md).

It is a *client* of the gateway, never a second holder of data: every page is rendered from
gRPC calls made over mutual TLS with the reader's own certificate, so each page view is an
audited call at the gateway and the console keeps nothing but a session cookie in memory.
It binds to loopback only and is opened with a one-time secret printed on the terminal, like a
notebook server (``console.security``).

Layout: ``app`` builds the aiohttp application and runs it; ``connection`` holds the gRPC
channel and reads the reader's role (the *mode*) from the certificate; ``security`` is the
one-time secret, the session, the Host check, CSRF and the response headers; ``pages`` holds one
module per page (discovered, nothing to register by hand); ``labels`` holds the English and
Chinese labels; ``rendering`` the jinja2 environment (autoescape on) and the page helpers.
"""
