"""A SMART standalone launch by SMART on FHIR's Python client, fhirclient, against a running
Healthfolio, for tests/it/smart_fhirclient.rs.

Usage: standalone.py FHIR_BASE CLIENT_ID REDIRECT_URI SCOPE

Driven as the library's documentation drives it from a server app: one FHIRClient builds the
authorization URL (endpoints from the CapabilityStatement, PKCE S256) and its state is saved;
a second one, made from that state as the app's callback handler would, redeems the code from the
redirect read on stdin. The app then reads the patient and searches their prescriptions with the
library's models, waits until the library holds the access token expired, reauthorizes with the
refresh token, searches again, and prints one JSON line of what it saw.
"""

import json
import sys
import time
from datetime import datetime

from fhirclient import client
from fhirclient.models.medicationrequest import MedicationRequest


def main():
    fhir, client_id, redirect_uri, scope = sys.argv[1:5]
    saved = {}
    settings = {"app_id": client_id, "api_base": fhir, "redirect_uri": redirect_uri, "scope": scope}
    print(client.FHIRClient(settings=settings, save_func=saved.update).authorize_url, flush=True)
    callback = sys.stdin.readline().strip()

    smart = client.FHIRClient(state=saved, save_func=saved.update)
    smart.handle_callback(callback)
    auth = smart.server.auth
    first_access, first_refresh = auth.access_token, auth.refresh_token
    patient = smart.patient

    def search():
        found = MedicationRequest.where(struct={"patient": smart.patient_id}).perform_resources(smart.server)
        return [m.id for m in found]

    first_ids = search()
    time.sleep(max(0.0, (auth.expires_at - datetime.now()).total_seconds()) + 1.5)
    # The library drops an access token it holds expired; the app then asks for a new one.
    expired = not smart.ready
    refreshed = smart.reauthorize()
    second_ids = search()
    print(
        json.dumps(
            {
                "patient": smart.patient_id,
                "patient_read": f"Patient/{patient.id}" if patient else None,
                "first_ids": first_ids,
                "expired": expired,
                "refreshed": refreshed,
                "second_ids": second_ids,
                "first_access": first_access,
                "first_refresh": first_refresh,
                "access_changed": auth.access_token not in (None, first_access),
                "refresh_rotated": auth.refresh_token not in (None, first_refresh),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
