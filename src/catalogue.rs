//! The medicines this service knows by name: dm+d codes with the usual dose, unit, timing and
//! route. The portal offers them to a patient saying what they take; the demo and the load
//! generator prescribe them. Data, below every layer.

pub mod classes;

/// A medicine as the demo and the generator prescribe it.
pub struct Medicine {
    pub code: &'static str,
    pub display: &'static str,
    pub dose: &'static str,
    /// (dose quantity, unit display, SNOMED unit code)
    pub unit: (u32, &'static str, &'static str),
    /// (frequency, period, period unit, optional `when`)
    pub timing: (u32, u32, &'static str, Option<&'static str>),
    /// (route SNOMED code, display)
    pub route: (&'static str, &'static str),
    pub pack: u32,
}

pub const MEDICINES: &[Medicine] = &[
    Medicine {
        code: "320000009",
        display: "Simvastatin 40mg tablets",
        dose: "1 tablet - once a day - at night",
        unit: (1, "tablet", "385055001"),
        timing: (1, 1, "d", Some("HS")),
        route: ("26643006", "Oral"),
        pack: 28,
    },
    Medicine {
        code: "317297007",
        display: "Omeprazole 10mg gastro-resistant capsules",
        dose: "1 capsule - once a day - in the morning",
        unit: (1, "capsule", "732937005"),
        timing: (1, 1, "d", Some("MORN")),
        route: ("26643006", "Oral"),
        pack: 28,
    },
    Medicine {
        code: "39113611000001102",
        display: "Salbutamol 100micrograms/dose inhaler CFC free",
        dose: "2 puffs - up to 4 times a day - when required",
        unit: (2, "puff", "415215001"),
        timing: (4, 1, "d", None),
        route: ("18679011000001101", "Inhalation"),
        pack: 1,
    },
    Medicine {
        code: "322236009",
        display: "Paracetamol 500mg tablets",
        dose: "2 tablets - up to 4 times a day - when required",
        unit: (2, "tablet", "385055001"),
        timing: (4, 1, "d", None),
        route: ("26643006", "Oral"),
        pack: 100,
    },
    Medicine {
        code: "39732311000001104",
        display: "Amoxicillin 250mg capsules",
        dose: "1 capsule - 3 times a day - for 7 days",
        unit: (1, "capsule", "732937005"),
        timing: (3, 1, "d", None),
        route: ("26643006", "Oral"),
        pack: 21,
    },
    Medicine {
        code: "329653008",
        display: "Ibuprofen 400mg tablets",
        dose: "1 tablet - 3 times a day - with food",
        unit: (1, "tablet", "385055001"),
        timing: (3, 1, "d", Some("C")),
        route: ("26643006", "Oral"),
        pack: 24,
    },
    Medicine {
        code: "322341003",
        display: "Co-codamol 30mg/500mg tablets",
        dose: "2 tablets - up to 4 times a day - when required",
        unit: (2, "tablet", "385055001"),
        timing: (4, 1, "d", None),
        route: ("26643006", "Oral"),
        pack: 30,
    },
];

/// (dm+d code, name) of the medicines a patient can say they take in the portal.
pub fn medicine_choices() -> Vec<(&'static str, &'static str)> {
    MEDICINES.iter().map(|m| (m.code, m.display)).collect()
}
