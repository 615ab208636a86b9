"""Data protection primitives: the keyring, subject tokens and field encryption.

Three small pieces with one job each, so that the rules about personal data live in one place:

* ``Keyring`` holds the secret keys (and is the only thing that touches the key file);
* ``SubjectTokenizer`` turns an identity number into a keyed blind index for equality lookups
  (it lives in ``core.tokens``, so the domain packages can check a token's shape too);
* ``FieldCipher`` encrypts one column value, bound to the row and column it belongs to.

Nothing here logs, and no exception raised here ever contains a plaintext value.
"""

from credgate.core.tokens import SubjectTokenizer, is_subject_token
from credgate.gateway.protection.cipher import (
    CipherError,
    DecryptionError,
    FieldCipher,
    MalformedEnvelopeError,
)
from credgate.gateway.protection.keyring import Keyring, KeyringError, UnknownKeyError

__all__ = [
    "CipherError",
    "DecryptionError",
    "FieldCipher",
    "Keyring",
    "KeyringError",
    "MalformedEnvelopeError",
    "SubjectTokenizer",
    "UnknownKeyError",
    "is_subject_token",
]
