//! A generation's status and which may follow which. Every statement that ends a
//! generation moves it out of the statuses [`Status::from_for`] names, in SQL
//! (`WHERE status IN (...)`), so whichever transition wins is the only one that gives its
//! reservation back.

use serde::{Deserialize, Serialize};

/// `pending` -> `succeeded` | `failed` for a synchronous generation; `queued` -> `running`
/// -> `succeeded` | `failed` | `canceled` for an asynchronous one (a queued one may also
/// end `failed` or `canceled` without running).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pending,
    Queued,
    Running,
    Succeeded,
    Failed,
    Canceled,
}

crate::db::text_column!(
    Status: Status::Pending,
    Status::Queued,
    Status::Running,
    Status::Succeeded,
    Status::Failed,
    Status::Canceled
);

impl Status {
    pub const ALL: [Status; 6] =
        [Status::Pending, Status::Queued, Status::Running, Status::Succeeded, Status::Failed, Status::Canceled];

    /// As in the API and the `status` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Queued => "queued",
            Status::Running => "running",
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
            Status::Canceled => "canceled",
        }
    }

    /// Whether it can still change.
    pub fn is_final(self) -> bool {
        matches!(self, Status::Succeeded | Status::Failed | Status::Canceled)
    }

    /// Whether a generation may move from `self` to `to`.
    pub fn may_become(self, to: Status) -> bool {
        use Status::*;
        matches!(
            (self, to),
            (Pending, Succeeded | Failed) | (Queued, Running | Failed | Canceled) | (Running, Succeeded | Failed)
        )
    }

    /// The statuses a generation may move to `to` from: what the `WHERE status IN (...)`
    /// of that transition lists.
    pub fn from_for(to: Status) -> Vec<Status> {
        Status::ALL.into_iter().filter(|from| from.may_become(to)).collect()
    }

    /// `'a', 'b'`: the statuses as an SQL list (fixed names, never user input).
    pub fn sql_list(statuses: &[Status]) -> String {
        statuses.iter().map(|s| format!("'{}'", s.as_str())).collect::<Vec<_>>().join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::Status::{self, *};

    #[test]
    fn only_unfinished_generations_move_and_final_ones_never_do() {
        for from in Status::ALL {
            for to in Status::ALL {
                if from.may_become(to) {
                    assert!(!from.is_final(), "{from:?} is final but may become {to:?}");
                    assert_ne!(from, to, "a transition changes the status");
                }
            }
        }
        for end in [Succeeded, Failed, Canceled] {
            assert!(end.is_final() && Status::from_for(end).iter().all(|s| !s.is_final()));
        }
    }

    #[test]
    fn which_statuses_each_ending_takes_generations_from() {
        assert_eq!(Status::from_for(Succeeded), vec![Pending, Running]);
        assert_eq!(Status::from_for(Failed), vec![Pending, Queued, Running]);
        // Cancel takes only what no consumer has taken yet.
        assert_eq!(Status::from_for(Canceled), vec![Queued]);
        assert_eq!(Status::from_for(Running), vec![Queued]);
        assert!(Status::from_for(Pending).is_empty() && Status::from_for(Queued).is_empty());
        assert_eq!(Status::sql_list(&[Pending, Running]), "'pending', 'running'");
    }

    #[test]
    fn a_synchronous_generation_cannot_be_canceled_or_run() {
        assert!(!Pending.may_become(Canceled) && !Pending.may_become(Running) && !Pending.may_become(Queued));
        assert!(!Running.may_become(Canceled), "once running, 409 not_cancelable");
        assert!(!Succeeded.may_become(Failed), "a delivered result is never undone");
    }
}
