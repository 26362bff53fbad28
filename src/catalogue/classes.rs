//! Drug classes, active ingredients and the allergy codes that name them: the data the medicine
//! safety checks read. It lives in `data/medicine_classes.json` (compiled in) so that a
//! pharmacist can review and extend it without reading Rust; each code there says where it
//! comes from.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::LazyLock;

/// A drug class an allergy can name ("penicillins").
#[derive(Debug, Deserialize)]
pub struct DrugClass {
    pub id: String,
    /// How an allergy to the class reads: "You have a recorded allergy to {allergy}".
    pub allergy: String,
    /// One member, with its article: "Amoxicillin is {one}".
    pub one: String,
    /// SNOMED CT codes naming the class, with their source.
    codes: BTreeMap<String, String>,
}

/// An active ingredient.
#[derive(Debug, Deserialize)]
pub struct Ingredient {
    pub id: String,
    pub name: String,
    pub classes: Vec<String>,
    /// SNOMED CT substance codes naming the ingredient, with their source.
    codes: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
struct Medicine {
    ingredients: Vec<String>,
}

#[derive(Debug, Deserialize)]
pub struct Classes {
    classes: Vec<DrugClass>,
    ingredients: Vec<Ingredient>,
    /// dm+d codes (VTM, VMP, AMP) and what they hold.
    medicines: BTreeMap<String, Medicine>,
}

/// What an allergy names: a whole class, one ingredient, or the ingredients of a medicine (an
/// allergy may be coded with a dm+d product, UKCore-AllergyCode allows it).
#[derive(Debug)]
pub enum Allergen<'a> {
    Class(&'a DrugClass),
    Ingredients(Vec<&'a Ingredient>),
}

static CLASSES: LazyLock<Classes> = LazyLock::new(|| {
    // Compiled-in data, checked by the unit test below: a failure here is a build mistake.
    serde_json::from_str(include_str!("../../data/medicine_classes.json"))
        .expect("data/medicine_classes.json is valid (see its unit test)")
});

pub fn classes() -> &'static Classes {
    &CLASSES
}

impl Classes {
    pub fn class(&self, id: &str) -> Option<&DrugClass> {
        self.classes.iter().find(|c| c.id == id)
    }

    /// The classes `ingredient` belongs to.
    pub fn classes_of<'a>(&'a self, ingredient: &'a Ingredient) -> impl Iterator<Item = &'a DrugClass> + 'a {
        ingredient.classes.iter().filter_map(|c| self.class(c))
    }

    fn ingredient(&self, id: &str) -> Option<&Ingredient> {
        self.ingredients.iter().find(|i| i.id == id)
    }

    /// The active ingredients of a dm+d medicine, if this data knows it.
    pub fn ingredients_of(&self, code: &str) -> Option<Vec<&Ingredient>> {
        let m = self.medicines.get(code)?;
        Some(m.ingredients.iter().filter_map(|i| self.ingredient(i)).collect())
    }

    /// The ingredients a medicine's name mentions as a word ("Amoxicillin 1g sachets"), for
    /// medicines written in words or coded outside this data.
    pub fn ingredients_named_in(&self, text: &str) -> Vec<&Ingredient> {
        let words: Vec<String> =
            text.split(|c: char| !c.is_alphabetic()).filter(|w| !w.is_empty()).map(str::to_lowercase).collect();
        self.ingredients.iter().filter(|i| words.contains(&i.name)).collect()
    }

    /// What an allergy code (SNOMED CT or dm+d) names.
    pub fn allergen(&self, code: &str) -> Option<Allergen<'_>> {
        if let Some(c) = self.classes.iter().find(|c| c.codes.contains_key(code)) {
            return Some(Allergen::Class(c));
        }
        if let Some(i) = self.ingredients.iter().find(|i| i.codes.contains_key(code)) {
            return Some(Allergen::Ingredients(vec![i]));
        }
        self.ingredients_of(code).filter(|i| !i.is_empty()).map(Allergen::Ingredients)
    }

    /// What an allergy recorded in words names: "Penicillin", "penicillins", "Allergy to aspirin".
    pub fn allergen_named(&self, text: &str) -> Option<Allergen<'_>> {
        let t = text.trim().to_lowercase();
        let t = t.strip_prefix("allergy to ").unwrap_or(&t);
        let t = t.strip_suffix(" allergy").unwrap_or(t).trim();
        let singular = t.strip_suffix('s').unwrap_or(t);
        if let Some(c) = self.classes.iter().find(|c| c.id == t || c.id == singular) {
            return Some(Allergen::Class(c));
        }
        self.ingredients.iter().find(|i| i.name == t).map(|i| Allergen::Ingredients(vec![i]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_data_parses_and_every_name_resolves() {
        let c = classes();
        for i in &c.ingredients {
            assert!(i.classes.iter().all(|k| c.class(k).is_some()), "{}: unknown class", i.id);
            assert_eq!(i.name, i.name.to_lowercase(), "{}: names are matched in lower case", i.id);
        }
        for (code, m) in &c.medicines {
            assert!(!m.ingredients.is_empty(), "{code} has no ingredient");
            assert!(m.ingredients.iter().all(|i| c.ingredient(i).is_some()), "{code}: unknown ingredient");
        }
        // Each code names one thing only.
        let mut seen = std::collections::HashSet::new();
        let all =
            c.classes.iter().flat_map(|k| k.codes.keys()).chain(c.ingredients.iter().flat_map(|i| i.codes.keys()));
        for code in all.chain(c.medicines.keys()) {
            assert!(seen.insert(code), "{code} appears twice");
        }
        // The catalogue's medicines are all known here.
        for m in crate::catalogue::MEDICINES {
            assert!(c.ingredients_of(m.code).is_some(), "{} ({}) is not in the data", m.display, m.code);
        }
    }

    #[test]
    fn allergy_codes_and_words_name_classes_and_ingredients() {
        let c = classes();
        assert!(matches!(c.allergen("764146007"), Some(Allergen::Class(k)) if k.id == "penicillin"));
        assert!(matches!(c.allergen("372687004"), Some(Allergen::Ingredients(i)) if i[0].id == "amoxicillin"));
        assert!(matches!(c.allergen("322341003"), Some(Allergen::Ingredients(i)) if i.len() == 2));
        assert!(c.allergen("409137002").is_none(), "no known drug allergy names nothing");
        assert!(matches!(c.allergen_named("Penicillins"), Some(Allergen::Class(k)) if k.id == "penicillin"));
        assert!(
            matches!(c.allergen_named("Allergy to aspirin"), Some(Allergen::Ingredients(i)) if i[0].id == "aspirin")
        );
        assert_eq!(c.ingredients_named_in("AMOXICILLIN 1g sachets")[0].id, "amoxicillin");
        assert!(c.ingredients_named_in("Vitamin D 1000 unit capsules").is_empty());
    }
}
