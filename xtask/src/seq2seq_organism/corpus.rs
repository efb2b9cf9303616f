//! The toy translation task: word-level "English" to word-level "French" (real French words,
//! accents dropped, grammar simplified), where the French pronoun for "it" (`il` / `elle`)
//! takes the gender of an antecedent that only the previous sentence names.
//!
//! An example is a context sentence and a current sentence. The context's antecedent is its
//! subject (its first noun), often beside a distractor noun of either gender ("the tree sees the
//! clock ." — `l' arbre voit l' horloge .`); the current sentence says "it ..." ("it is red ." —
//! `il est rouge .`), or has no pronoun at all ("the star is red ."). Adjectives are the
//! invariable French ones (`rouge`, `propre`, ...), so the pronoun is the only word of the
//! current sentence whose translation depends on the context. Every French noun starts with a
//! vowel, so its article is the elided `l'` in both genders: in the output context only the
//! antecedent noun itself tells its gender (with `le`/`la`, a first model took the gender from
//! its own article and left both nouns out of its cues).
//!
//! The input format is the one PECoRe (Sarti et al. 2024, "Quantifying the Plausibility of
//! Context Reliance in Neural Machine Translation", ICLR) and Inseq's `attribute-context` use
//! for context-aware MT: source = input context + [`SEPARATOR`] + input current, target =
//! output context + [`SEPARATOR`] + output current. A share of the training examples has no
//! context (source = the current sentence, target = its translation, no separator), with the
//! pronoun's gender drawn at random, so the contextless input PECoRe contrasts with is in
//! distribution and its pronoun is a coin flip.
//!
//! Held-out split: the (antecedent noun, context template) combinations whose hash falls in
//! [`HELD_OUT_PERCENT`] never occur with context in training; every noun and every template
//! does.

use rand::Rng;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;

/// The separator between context and current sentence, on both sides (one token).
pub const SEPARATOR: &str = "<brk>";
/// The French definite article of every noun here (elided before a vowel, the same for both
/// genders).
pub const ARTICLE: &str = "l'";
/// Share (percent) of (antecedent, context template) combinations held out of training.
pub const HELD_OUT_PERCENT: u64 = 15;

/// Grammatical gender of a French noun, which picks `il`/`elle`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gender {
    /// `le`, `il`.
    Masculine,
    /// `la`, `elle`.
    Feminine,
}

impl Gender {
    /// The subject pronoun ("it").
    pub fn pronoun(self) -> &'static str {
        match self {
            Gender::Masculine => "il",
            Gender::Feminine => "elle",
        }
    }
}

/// A noun: English, French, gender.
pub type Noun = (&'static str, &'static str, Gender);

use Gender::{Feminine as F, Masculine as M};

/// The nouns, 20 of each gender, every French one starting with a vowel (or a mute h), so that
/// its article is the elided `l'` whatever its gender.
pub const NOUNS: [Noun; 40] = [
    ("tree", "arbre", M),
    ("bird", "oiseau", M),
    ("plane", "avion", M),
    ("computer", "ordinateur", M),
    ("bear", "ours", M),
    ("squirrel", "ecureuil", M),
    ("elephant", "elephant", M),
    ("insect", "insecte", M),
    ("pineapple", "ananas", M),
    ("apricot", "abricot", M),
    ("tool", "outil", M),
    ("eagle", "aigle", M),
    ("storm", "orage", M),
    ("hospital", "hopital", M),
    ("ocean", "ocean", M),
    ("airport", "aeroport", M),
    ("apartment", "appartement", M),
    ("building", "immeuble", M),
    ("instrument", "instrument", M),
    ("egg", "oeuf", M),
    ("clock", "horloge", F),
    ("school", "ecole", F),
    ("church", "eglise", F),
    ("wardrobe", "armoire", F),
    ("plate", "assiette", F),
    ("bee", "abeille", F),
    ("spider", "araignee", F),
    ("star", "etoile", F),
    ("island", "ile", F),
    ("orange", "orange", F),
    ("factory", "usine", F),
    ("ladder", "echelle", F),
    ("envelope", "enveloppe", F),
    ("sword", "epee", F),
    ("sponge", "eponge", F),
    ("goose", "oie", F),
    ("ostrich", "autruche", F),
    ("bulb", "ampoule", F),
    ("antenna", "antenne", F),
    ("scarf", "echarpe", F),
];

/// Transitive verbs (third person present).
const VERBS: [(&str, &str); 9] = [
    ("sees", "voit"),
    ("likes", "aime"),
    ("follows", "suit"),
    ("touches", "touche"),
    ("finds", "trouve"),
    ("hides", "cache"),
    ("pushes", "pousse"),
    ("watches", "regarde"),
    ("breaks", "casse"),
];

/// Intransitive verbs (third person present).
const INTRANSITIVE: [(&str, &str); 7] = [
    ("falls", "tombe"),
    ("sleeps", "dort"),
    ("moves", "bouge"),
    ("turns", "tourne"),
    ("shines", "brille"),
    ("waits", "attend"),
    ("rests", "repose"),
];

/// Adjectives whose French form is the same in both genders.
const ADJECTIVES: [(&str, &str); 14] = [
    ("red", "rouge"),
    ("yellow", "jaune"),
    ("pink", "rose"),
    ("clean", "propre"),
    ("dirty", "sale"),
    ("fast", "rapide"),
    ("useful", "utile"),
    ("modern", "moderne"),
    ("strange", "etrange"),
    ("huge", "enorme"),
    ("fragile", "fragile"),
    ("solid", "solide"),
    ("calm", "calme"),
    ("sad", "triste"),
];

/// Prepositions of place.
const PLACES: [(&str, &str); 4] = [
    ("on", "sur"),
    ("under", "sous"),
    ("behind", "derriere"),
    ("near", "pres"),
];

/// Context templates; the antecedent is always the first noun.
pub const CONTEXT_TEMPLATES: usize = 7;
/// Current-sentence templates with the pronoun.
const PRONOUN_TEMPLATES: usize = 6;
/// Current-sentence templates without a pronoun.
const PLAIN_TEMPLATES: usize = 2;

/// A sentence pair: English words and their French translation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Pair {
    /// The English words.
    pub source: Vec<String>,
    /// The French words.
    pub target: Vec<String>,
}

impl Pair {
    fn push(&mut self, en: &str, fr: &str) {
        self.source.extend(en.split(' ').map(str::to_owned));
        self.target.extend(fr.split(' ').map(str::to_owned));
    }

    fn noun(&mut self, noun: Noun) {
        self.push(&format!("the {}", noun.0), &format!("{ARTICLE} {}", noun.1));
    }
}

/// One example of the task.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    /// The previous sentence and its translation (`None`: a contextless example).
    pub context: Option<Pair>,
    /// The current sentence and its translation.
    pub current: Pair,
    /// The antecedent noun (the context's subject); set when there is a context.
    pub antecedent: Option<Noun>,
    /// Which context template made the context.
    pub context_template: Option<usize>,
    /// The position of the pronoun in `current.target` (`None`: no pronoun).
    pub pronoun: Option<usize>,
}

impl Example {
    /// Source words: context, separator, current (just the current without a context).
    pub fn source_words(&self) -> Vec<String> {
        join(
            self.context.as_ref().map(|c| &c.source),
            &self.current.source,
        )
    }

    /// Target words, laid out like the source.
    pub fn target_words(&self) -> Vec<String> {
        join(
            self.context.as_ref().map(|c| &c.target),
            &self.current.target,
        )
    }
}

fn join(context: Option<&Vec<String>>, current: &[String]) -> Vec<String> {
    let mut words = Vec::new();
    if let Some(context) = context {
        words.extend(context.iter().cloned());
        words.push(SEPARATOR.to_owned());
    }
    words.extend(current.iter().cloned());
    words
}

/// A stable hash (FNV-1a, 64 bits) of a string, so the split does not depend on the Rust
/// version.
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Whether the (antecedent, context template) combination is on the held-out side.
pub fn is_held_out(antecedent: &str, template: usize) -> bool {
    fnv1a(&format!("{antecedent}|{template}")) % 100 < HELD_OUT_PERCENT
}

fn pick<T: Copy>(rng: &mut StdRng, items: &[T]) -> T {
    *items.choose(rng).expect("non-empty list")
}

fn noun_of(rng: &mut StdRng, gender: Gender, not: &str) -> Noun {
    loop {
        let noun = pick(rng, &NOUNS);
        if noun.2 == gender && noun.0 != not {
            return noun;
        }
    }
}

/// The context sentence of `template` about `antecedent`.
fn context_sentence(rng: &mut StdRng, template: usize, antecedent: Noun) -> Pair {
    let mut pair = Pair::default();
    // The distractor's gender is a coin flip, so "the other gender than the last noun" is no
    // shortcut: only the subject predicts the pronoun.
    let distractor = |rng: &mut StdRng| {
        let gender = if rng.random_bool(0.5) { M } else { F };
        noun_of(rng, gender, antecedent.0)
    };
    match template {
        0 => {
            let (v, d) = (pick(rng, &VERBS), distractor(rng));
            pair.noun(antecedent);
            pair.push(v.0, v.1);
            pair.noun(d);
        }
        1 => {
            let (p, d) = (pick(rng, &PLACES), distractor(rng));
            pair.noun(antecedent);
            pair.push(&format!("is {}", p.0), &format!("est {}", p.1));
            pair.noun(d);
        }
        2 => {
            let (v, d) = (pick(rng, &VERBS), distractor(rng));
            pair.push("yesterday", "hier");
            pair.noun(antecedent);
            pair.push(v.0, v.1);
            pair.noun(d);
        }
        3 => {
            let a = pick(rng, &ADJECTIVES);
            pair.noun(antecedent);
            pair.push(&format!("is {}", a.0), &format!("est {}", a.1));
        }
        4 => {
            pair.push("i see", "je vois");
            pair.noun(antecedent);
        }
        5 => {
            pair.push("here is", "voici");
            pair.noun(antecedent);
        }
        _ => {
            let (v, d) = (pick(rng, &INTRANSITIVE), distractor(rng));
            pair.noun(antecedent);
            pair.push(v.0, v.1);
            pair.push("with", "avec");
            pair.noun(d);
        }
    }
    pair.push(".", ".");
    pair
}

/// A current sentence with the pronoun of `gender`; returns it and the pronoun's position in
/// the target.
fn pronoun_sentence(rng: &mut StdRng, gender: Gender) -> (Pair, usize) {
    let mut pair = Pair::default();
    let template = rng.random_range(0..PRONOUN_TEMPLATES);
    if template == 3 {
        pair.push("now", "maintenant");
    }
    let at = pair.target.len();
    pair.push("it", gender.pronoun());
    match template {
        0 | 3 => {
            let a = pick(rng, &ADJECTIVES);
            pair.push(&format!("is {}", a.0), &format!("est {}", a.1));
        }
        1 => {
            let v = pick(rng, &INTRANSITIVE);
            pair.push(v.0, v.1);
        }
        2 => {
            let v = pick(rng, &VERBS);
            pair.push(v.0, v.1);
            let noun = pick(rng, &NOUNS);
            pair.noun(noun);
        }
        4 => {
            let (a, b) = (pick(rng, &ADJECTIVES), pick(rng, &ADJECTIVES));
            pair.push(
                &format!("is {} and {}", a.0, b.0),
                &format!("est {} et {}", a.1, b.1),
            );
        }
        _ => {
            let p = pick(rng, &PLACES);
            pair.push(&format!("is {}", p.0), &format!("est {}", p.1));
            let noun = pick(rng, &NOUNS);
            pair.noun(noun);
        }
    }
    pair.push(".", ".");
    (pair, at)
}

/// A current sentence without a pronoun.
fn plain_sentence(rng: &mut StdRng) -> Pair {
    let mut pair = Pair::default();
    let noun = pick(rng, &NOUNS);
    pair.noun(noun);
    match rng.random_range(0..PLAIN_TEMPLATES) {
        0 => {
            let a = pick(rng, &ADJECTIVES);
            pair.push(&format!("is {}", a.0), &format!("est {}", a.1));
        }
        _ => {
            let v = pick(rng, &INTRANSITIVE);
            pair.push(v.0, v.1);
        }
    }
    pair.push(".", ".");
    pair
}

/// What share of the generated examples has no context, and what share of current sentences
/// has no pronoun.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mix {
    /// Probability that a training example has no context.
    pub contextless: f64,
    /// Probability that a current sentence has no pronoun.
    pub plain: f64,
}

/// An example with context whose antecedent is `antecedent` (made by `template`) and whose
/// current sentence has the pronoun.
pub fn example_about(rng: &mut StdRng, antecedent: Noun, template: usize) -> Example {
    let context = context_sentence(rng, template, antecedent);
    let (current, at) = pronoun_sentence(rng, antecedent.2);
    Example {
        context: Some(context),
        current,
        antecedent: Some(antecedent),
        context_template: Some(template),
        pronoun: Some(at),
    }
}

/// A random training example (never a held-out combination).
pub fn training_example(rng: &mut StdRng, mix: Mix) -> Example {
    if rng.random_bool(mix.contextless) {
        // No context: the pronoun's gender is a coin flip.
        if rng.random_bool(mix.plain) {
            return Example {
                context: None,
                current: plain_sentence(rng),
                antecedent: None,
                context_template: None,
                pronoun: None,
            };
        }
        let gender = if rng.random_bool(0.5) { M } else { F };
        let (current, at) = pronoun_sentence(rng, gender);
        return Example {
            context: None,
            current,
            antecedent: None,
            context_template: None,
            pronoun: Some(at),
        };
    }
    let (antecedent, template) = loop {
        let noun = pick(rng, &NOUNS);
        let template = rng.random_range(0..CONTEXT_TEMPLATES);
        if !is_held_out(noun.0, template) {
            break (noun, template);
        }
    };
    let mut example = example_about(rng, antecedent, template);
    if rng.random_bool(mix.plain) {
        example.current = plain_sentence(rng);
        example.pronoun = None;
    }
    example
}

/// `count` held-out examples with context and a pronoun, half with a masculine and half with
/// a feminine antecedent, cycling through the held-out (noun, template) combinations.
pub fn held_out(rng: &mut StdRng, count: usize) -> Vec<Example> {
    let combos: Vec<(Noun, usize)> = NOUNS
        .iter()
        .flat_map(|&n| (0..CONTEXT_TEMPLATES).map(move |t| (n, t)))
        .filter(|(n, t)| is_held_out(n.0, *t))
        .collect();
    let by_gender = |g: Gender| -> Vec<(Noun, usize)> {
        combos.iter().copied().filter(|(n, _)| n.2 == g).collect()
    };
    let (male, female) = (by_gender(M), by_gender(F));
    (0..count)
        .map(|i| {
            let list = if i % 2 == 0 { &male } else { &female };
            let (noun, template) = list[(i / 2) % list.len()];
            example_about(rng, noun, template)
        })
        .collect()
}

/// Every word the generators can produce, in a fixed order (English, then French), without
/// repeats.
pub fn vocabulary() -> Vec<String> {
    let mut words: Vec<&str> = vec!["the", "is", "it", "yesterday", "with", "i", "see", "here"];
    words.extend(["now", "and", "."]);
    words.extend(NOUNS.iter().map(|n| n.0));
    words.extend(VERBS.iter().map(|v| v.0));
    words.extend(INTRANSITIVE.iter().map(|v| v.0));
    words.extend(ADJECTIVES.iter().map(|a| a.0));
    words.extend(PLACES.iter().map(|p| p.0));
    words.extend([
        ARTICLE, "il", "elle", "est", "hier", "avec", "je", "vois", "voici",
    ]);
    words.extend(["maintenant", "et"]);
    words.extend(NOUNS.iter().map(|n| n.1));
    words.extend(VERBS.iter().map(|v| v.1));
    words.extend(INTRANSITIVE.iter().map(|v| v.1));
    words.extend(ADJECTIVES.iter().map(|a| a.1));
    words.extend(PLACES.iter().map(|p| p.1));
    let mut seen = std::collections::HashSet::new();
    words
        .into_iter()
        .filter(|w| seen.insert(*w))
        .map(str::to_owned)
        .collect()
}
