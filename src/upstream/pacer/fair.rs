//! One priority level of the pacer's queue: callers served in turn.
//!
//! Each caller (a flow) has its own line; the lines take turns, one call at
//! a time, so a bot that queues fifty calls delays another bot's single call
//! by at most one slot per other caller, not fifty.

use std::collections::VecDeque;

/// One caller's line: its flow id, how many calls in a row its turn allows,
/// how many of those it has had, and its calls.
struct Line<T> {
    flow: u64,
    weight: u32,
    served: u32,
    items: VecDeque<T>,
}

/// Lines by flow, in serving order: the front line is served next.
pub(super) struct FairQueue<T> {
    lines: VecDeque<Line<T>>,
}

impl<T> Default for FairQueue<T> {
    fn default() -> Self {
        Self {
            lines: VecDeque::new(),
        }
    }
}

impl<T> FairQueue<T> {
    /// Appends `item` to its flow's line; a new flow joins the rotation
    /// last, allowed `weight` calls per turn (at least 1).
    pub(super) fn push(&mut self, flow: u64, weight: u32, item: T) {
        match self.lines.iter_mut().find(|line| line.flow == flow) {
            Some(line) => line.items.push_back(item),
            None => self.lines.push_back(Line {
                flow,
                weight: weight.max(1),
                served: 0,
                items: VecDeque::from([item]),
            }),
        }
    }

    /// Takes the next item from the line whose turn it is; once that line
    /// has had its weight of calls in a row, it goes to the back.
    pub(super) fn pop(&mut self) -> Option<T> {
        let mut line = self.lines.pop_front()?;
        let item = line.items.pop_front();
        line.served += 1;
        if line.items.is_empty() {
            return item;
        }
        if line.served >= line.weight {
            line.served = 0;
            self.lines.push_back(line);
        } else {
            self.lines.push_front(line);
        }
        item
    }

    /// Items queued for `flow`.
    pub(super) fn len_of(&self, flow: u64) -> usize {
        self.lines
            .iter()
            .find(|l| l.flow == flow)
            .map_or(0, |l| l.items.len())
    }

    /// Items queued, all flows.
    pub(super) fn len(&self) -> usize {
        self.lines.iter().map(|line| line.items.len()).sum()
    }

    /// Items served before a new item of `flow` would be: each other flow's
    /// turns until then (up to its weight per turn), and the flow's own line.
    pub(super) fn ahead_of(&self, flow: u64) -> usize {
        let own = self
            .lines
            .iter()
            .find(|l| l.flow == flow)
            .map_or(0, |l| l.items.len());
        let turns = own + 1;
        let others: usize = self
            .lines
            .iter()
            .filter(|line| line.flow != flow)
            .map(|line| line.items.len().min(turns * line.weight as usize))
            .sum();
        own + others
    }

    /// Keeps the items `keep` accepts; empty lines leave the rotation.
    pub(super) fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) {
        for line in &mut self.lines {
            line.items.retain(&mut keep);
        }
        self.lines.retain(|line| !line.items.is_empty());
    }

    /// Removes and returns the items `take` selects.
    pub(super) fn extract(&mut self, mut take: impl FnMut(&T) -> bool) -> Vec<T> {
        let mut taken = Vec::new();
        for line in &mut self.lines {
            let items = std::mem::take(&mut line.items);
            let (out, kept): (VecDeque<T>, VecDeque<T>) = items.into_iter().partition(&mut take);
            line.items = kept;
            taken.extend(out);
        }
        self.lines.retain(|line| !line.items.is_empty());
        taken
    }
}

#[cfg(test)]
mod tests {
    use super::FairQueue;

    #[test]
    fn a_flow_of_weight_two_gets_two_calls_per_turn() {
        let mut queue = FairQueue::default();
        for i in 0..4 {
            queue.push(1, 2, ("heavy", i));
            queue.push(2, 1, ("light", i));
        }
        let order: Vec<_> = std::iter::from_fn(|| queue.pop())
            .map(|(who, _)| who)
            .collect();
        assert_eq!(
            order,
            [
                "heavy", "heavy", "light", "heavy", "heavy", "light", "light", "light"
            ]
        );
    }

    #[test]
    fn flows_take_turns_whatever_their_arrival_order() {
        let mut queue = FairQueue::default();
        for i in 0..3 {
            queue.push(1, 1, ("flood", i));
        }
        queue.push(2, 1, ("quiet", 0));
        let order: Vec<_> = std::iter::from_fn(|| queue.pop()).collect();
        assert_eq!(
            order,
            [("flood", 0), ("quiet", 0), ("flood", 1), ("flood", 2)]
        );
    }

    #[test]
    fn a_new_flow_waits_one_turn_per_other_flow() {
        let mut queue = FairQueue::default();
        for i in 0..50 {
            queue.push(1, 1, i);
        }
        assert_eq!(
            queue.ahead_of(2),
            1,
            "one call of the flood, then the newcomer"
        );
        assert_eq!(queue.ahead_of(1), 50);
    }
}
