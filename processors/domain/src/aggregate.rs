//! The one shape every entity's rules take.

use crate::{Millis, Rejection};

/// An entity's rules. The app layer loads the state kept under the record's key, runs
/// [`Aggregate::handle`], stores the state it returns (the stores hold each entity's latest
/// state, changelogged; facts are not persisted) and sends the effects.
///
/// `decide` may read the aggregate's settings (`&self`, e.g. the order's payment timeout);
/// `apply`, `effects` and `answer` read nothing but their arguments, so a state and its records
/// follow from the facts alone.
pub trait Aggregate {
    /// What the app keeps for the entity: `Option<…>` where the entity may not exist yet.
    type State: Clone;
    /// What the entity reacts to: its commands, and the answers or events of other processors
    /// it follows.
    type Input;
    /// What happened to the entity.
    type Fact;
    /// A record to send.
    type Effect;

    /// The facts an input leads to, or why it is refused. Changes nothing. A repeat of what
    /// already happened is `Ok(vec![])`, not a rejection: under at-least-once delivery it is
    /// normal, not an error.
    fn decide(
        &self,
        state: &Self::State,
        input: &Self::Input,
        now: Millis,
    ) -> Result<Vec<Self::Fact>, Rejection>;

    /// Fold one fact into the state. Never refuses: `decide` did the checking.
    fn apply(state: Self::State, fact: &Self::Fact) -> Self::State;

    /// The records a fact calls for, from the states before and after it. They come from facts
    /// only, so an input that changes nothing sends nothing.
    fn effects(before: &Self::State, fact: &Self::Fact, after: &Self::State) -> Vec<Self::Effect>;

    /// What the sender of `input` is told, from the state after it (or the rejection), for the
    /// entities that answer every input they get: one that changed nothing, a redelivery, is
    /// answered again, so a sender whose first answer was lost is never left waiting. The
    /// others say all they have to say through their facts' effects.
    fn answer(
        _after: &Self::State,
        _input: &Self::Input,
        _rejection: Option<&Rejection>,
    ) -> Option<Self::Effect> {
        None
    }

    /// `decide`, then fold each fact with `apply`, collecting its `effects`, then the `answer`.
    fn handle(&self, state: Self::State, input: &Self::Input, now: Millis) -> Outcome<Self> {
        match self.decide(&state, input, now) {
            Err(rejection) => Outcome {
                effects: Self::answer(&state, input, Some(&rejection))
                    .into_iter()
                    .collect(),
                state,
                facts: Vec::new(),
                rejection: Some(rejection),
            },
            Ok(facts) => {
                let mut state = state;
                let mut effects = Vec::new();
                for fact in &facts {
                    let before = state.clone();
                    state = Self::apply(state, fact);
                    effects.extend(Self::effects(&before, fact, &state));
                }
                effects.extend(Self::answer(&state, input, None));
                Outcome {
                    state,
                    facts,
                    effects,
                    rejection: None,
                }
            }
        }
    }
}

/// What one input did.
pub struct Outcome<A: Aggregate + ?Sized> {
    /// The state after the input; the state it came with when it was refused.
    pub state: A::State,
    /// Empty when the input was refused or changed nothing.
    pub facts: Vec<A::Fact>,
    /// The facts' effects in order, then the answer.
    pub effects: Vec<A::Effect>,
    pub rejection: Option<Rejection>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A counter that adds what it is told, refuses zero and answers every input with its total.
    struct Counter;

    impl Aggregate for Counter {
        type State = u32;
        type Input = u32;
        type Fact = u32;
        type Effect = String;

        fn decide(&self, _: &u32, input: &u32, _: Millis) -> Result<Vec<u32>, Rejection> {
            match input {
                0 => Err(Rejection::invalid("zero")),
                n => Ok(vec![1; *n as usize]),
            }
        }
        fn apply(state: u32, fact: &u32) -> u32 {
            state + fact
        }
        fn effects(before: &u32, _: &u32, after: &u32) -> Vec<String> {
            vec![format!("{before}->{after}")]
        }
        fn answer(after: &u32, _: &u32, rejection: Option<&Rejection>) -> Option<String> {
            Some(match rejection {
                Some(r) => format!("refused at {after}: {r}"),
                None => format!("total {after}"),
            })
        }
    }

    #[test]
    fn facts_fold_in_order_with_their_effects_then_the_answer() {
        let out = Counter.handle(5, &2, 0);
        assert_eq!(out.state, 7);
        assert_eq!(out.facts, vec![1, 1]);
        assert_eq!(out.effects, ["5->6", "6->7", "total 7"]);
        assert_eq!(out.rejection, None);
    }

    #[test]
    fn a_refusal_keeps_the_state_and_is_answered() {
        let out = Counter.handle(5, &0, 0);
        assert_eq!(out.state, 5);
        assert!(out.facts.is_empty());
        assert_eq!(out.effects, ["refused at 5: invalid: zero"]);
        assert_eq!(out.rejection, Some(Rejection::invalid("zero")));
    }
}
