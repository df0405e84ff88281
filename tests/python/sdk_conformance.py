"""Drive the drsync emulator with Microsoft's own Python SDK (azure-mgmt-apimanagement).

Run by tests/e2e/emulator.rs against a running emulator. Everything comes from the environment:

  EMU_BASE_URL      http://127.0.0.1:PORT/
  EMU_TOKEN         an ARM bearer token minted by the emulator
  EMU_SUBSCRIPTION  subscription id
  EMU_RG            resource group
  EMU_SOURCE        a Premium service to back up (system identity granted on the account)
  EMU_TARGET        a Premium service to restore into (system identity granted)
  EMU_MISMATCH      a Standard service (restore must fail with RestoreFailed)
  EMU_ACCOUNT       storage account name
  EMU_ACCOUNT_KEY   its access key
  EMU_CONTAINER     container name

Prints one line per check and "N passed, 0 failed" at the end; exits non-zero on the first
failure.
"""

import os
import sys
import time

from azure.core.credentials import AccessToken
from azure.core.exceptions import HttpResponseError
from azure.core.pipeline.policies import BearerTokenCredentialPolicy
from azure.mgmt.apimanagement import ApiManagementClient
from azure.mgmt.apimanagement.models import ApiManagementServiceBackupRestoreParameters


class LoopbackBearerPolicy(BearerTokenCredentialPolicy):
    """azure-core refuses bearer tokens over plain HTTP; the emulator is loopback HTTP, so every
    request (including the poller's) opts out (PROTOCOL.md section 7)."""

    def on_request(self, request):
        request.context.options["enforce_https"] = False
        super().on_request(request)


class StaticToken:
    """A credential returning the emulator's token (azure-core's TokenCredential protocol)."""

    def __init__(self, token):
        self._token = token

    def get_token(self, *scopes, **kwargs):
        return AccessToken(self._token, int(time.time()) + 3600)


def env(name):
    value = os.environ.get(name)
    if not value:
        sys.exit(f"missing environment variable {name}")
    return value


def main():
    base_url = env("EMU_BASE_URL")
    sub = env("EMU_SUBSCRIPTION")
    rg = env("EMU_RG")
    source = env("EMU_SOURCE")
    target = env("EMU_TARGET")
    mismatch = env("EMU_MISMATCH")
    account = env("EMU_ACCOUNT")
    key = env("EMU_ACCOUNT_KEY")
    container = env("EMU_CONTAINER")
    credential = StaticToken(env("EMU_TOKEN"))

    auth = LoopbackBearerPolicy(credential, "https://management.azure.com/.default")
    client = ApiManagementClient(
        credential, sub, base_url=base_url, authentication_policy=auth, polling_interval=1
    )
    passed = 0

    def check(name, condition, detail=""):
        nonlocal passed
        if not condition:
            print(f"FAIL {name}: {detail}")
            print(f"{passed} passed, 1 failed")
            sys.exit(1)
        passed += 1
        print(f"ok {name}")

    svc = client.api_management_service.get(rg, source)
    check("get service", svc.name == source and svc.sku.name == "Premium", repr(svc))

    cases = [
        ("AccessKey", {"access_type": "AccessKey", "access_key": key}),
        ("SystemAssignedManagedIdentity", {"access_type": "SystemAssignedManagedIdentity"}),
    ]
    for access, extra in cases:
        blob = f"{source}.sdk-{access.lower()}"
        params = ApiManagementServiceBackupRestoreParameters(
            storage_account=account, container_name=container, backup_name=blob, **extra
        )
        result = client.api_management_service.begin_backup(rg, source, params).result()
        check(
            f"begin_backup {access}",
            result is not None and result.name == source and result.provisioning_state == "Succeeded",
            repr(result),
        )
        result = client.api_management_service.begin_restore(rg, target, params).result()
        check(
            f"begin_restore {access}",
            result is not None and result.name == target and result.provisioning_state == "Succeeded",
            repr(result),
        )

    params = ApiManagementServiceBackupRestoreParameters(
        storage_account=account,
        container_name=container,
        backup_name=f"{source}.sdk-accesskey",
        access_type="AccessKey",
        access_key=key,
    )
    try:
        client.api_management_service.begin_restore(rg, mismatch, params).result()
        check("sku mismatch raises", False, "restore into a Standard service succeeded")
    except HttpResponseError as e:
        text = str(e)
        check(
            "sku mismatch raises HttpResponseError with RestoreFailed",
            "RestoreFailed" in text
            and "Cannot restore: current SKU is 'Standard', backup SKU is 'Premium'" in text,
            text,
        )
    print(f"{passed} passed, 0 failed")


if __name__ == "__main__":
    main()
