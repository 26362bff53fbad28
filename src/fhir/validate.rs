//! placeholder until the validation module lands
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    Invalid(String),
    Unprocessable(String),
}
pub fn validate(_rtype: &str, _body: &serde_json::Value) -> Result<(), Violation> {
    Ok(())
}
