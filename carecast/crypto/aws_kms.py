"""AWS KMS behind carecast's KMS interface: one customer-managed key per class, behind an alias.

Data keys are wrapped with ``Encrypt`` / ``Decrypt`` and the binding context as the KMS encryption
context, so AWS authenticates it exactly as the local KMS does with associated data; CloudTrail logs
the same calls on AWS's side. AWS keeps every version of a rotated key itself (``RotateKeyOnDemand``
or yearly automatic rotation): nothing needs re-wrapping to stay readable, and re-wrapping moves
data to the newest version. boto3 is an optional dependency (``carecast[ses]`` or any boto3).
"""

from __future__ import annotations

from typing import Any

from carecast.crypto.access_log import AccessLog
from carecast.crypto.kms import KEY_CLASSES, KeyBindingError, Kms, UnknownKeyError

CONTEXT_KEY = "carecast:binding"


class AwsKms(Kms):
    def __init__(self, client: Any, access_log: AccessLog, alias_prefix: str = "carecast"):
        self._client = client
        self.access_log = access_log
        self._prefix = alias_prefix

    def master_key_id(self, key_class: str) -> str:
        if key_class not in KEY_CLASSES:
            raise UnknownKeyError(f"no key class {key_class!r}")
        return f"alias/{self._prefix}-{key_class}"

    def key_class(self, master_key_id: str) -> str:
        start = f"alias/{self._prefix}-"
        key_class = master_key_id.removeprefix(start)
        if not master_key_id.startswith(start) or key_class not in KEY_CLASSES:
            raise UnknownKeyError(f"unknown key id {master_key_id!r}")
        return key_class

    def _wrap(self, data_key: bytes, master_key_id: str, context: str, version: int | None) -> tuple[bytes, str]:
        response = self._client.encrypt(
            KeyId=master_key_id, Plaintext=data_key, EncryptionContext={CONTEXT_KEY: context or "-"}
        )
        return response["CiphertextBlob"], response["KeyId"]

    def _unwrap(self, wrapped: bytes, master_key_id: str, context: str) -> tuple[bytes, str]:
        try:
            response = self._client.decrypt(
                CiphertextBlob=wrapped, KeyId=master_key_id, EncryptionContext={CONTEXT_KEY: context or "-"}
            )
        except self._client.exceptions.InvalidCiphertextException:
            raise KeyBindingError(
                f"key wrapped under {master_key_id} does not unwrap for {context or 'this artifact'}"
            ) from None
        except self._client.exceptions.NotFoundException:
            raise UnknownKeyError(f"{master_key_id} does not exist (deleted or never made)") from None
        return response["Plaintext"], response["KeyId"]

    def rotate(self, key_class: str) -> str:
        key_arn = self._client.describe_key(KeyId=self.master_key_id(key_class))["KeyMetadata"]["Arn"]
        self._client.rotate_key_on_demand(KeyId=key_arn)
        return key_arn


def provision_keys(client: Any, alias_prefix: str = "carecast") -> dict[str, str]:
    """Create a symmetric key and alias for every class that has none; return class -> key ARN."""
    existing = {alias["AliasName"]: alias.get("TargetKeyId") for alias in client.list_aliases()["Aliases"]}
    arns = {}
    for key_class in KEY_CLASSES:
        alias = f"alias/{alias_prefix}-{key_class}"
        if alias not in existing:
            metadata = client.create_key(Description=f"carecast {key_class} master key", KeyUsage="ENCRYPT_DECRYPT")
            client.create_alias(AliasName=alias, TargetKeyId=metadata["KeyMetadata"]["KeyId"])
            client.enable_key_rotation(KeyId=metadata["KeyMetadata"]["KeyId"])
        arns[key_class] = client.describe_key(KeyId=alias)["KeyMetadata"]["Arn"]
    return arns
