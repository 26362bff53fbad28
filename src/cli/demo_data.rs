pub struct DemoPatient {
    pub nhs_number: &'static str,
    pub given: &'static str,
    pub family: &'static str,
    pub birth_date: &'static str,
    pub email: &'static str,
}
pub fn demo_bundle() -> serde_json::Value {
    serde_json::json!({"resourceType":"Bundle","type":"transaction","entry":[]})
}
pub fn demo_patients() -> Vec<DemoPatient> {
    vec![]
}
