//! `$everything` of a record that federated sources hold part of.

use super::EverythingRequest;
use crate::access::AccessContext;
use crate::auth::Keys;
use crate::federation::{self, client::SourceClient};
use crate::fhir::search::SearchResult;
use crate::fhir::{FhirError, Store};

/// The record held here and, for a linked patient, what its sources hold (merged, marked).
pub fn everything(
    store: &Store,
    keys: &Keys,
    client: &SourceClient,
    ctx: &AccessContext,
    req: &EverythingRequest,
) -> Result<SearchResult, FhirError> {
    let held = || store.everything(ctx, req);
    federation::everything(store, keys, client, ctx, &req.patient, req.types.clone(), req.cursor.is_none(), held)
}
