//! One priority level of the pacer's queue: callers served in turn.
//!
//! Each caller (a flow) has its own line; the lines take turns, one call at
//! a time, so a bot that queues fifty calls delays another bot's single call
//! by at most one slot per other caller, not fifty.

use std::collections::VecDeque;

/// Lines by flow, in serving order: the front line is served next.
pub(super) struct FairQueue<T> {
    lines: VecDeque<(u64, VecDeque<T>)>,
}

impl<T> Default for FairQueue<T> {
    fn default() -> Self {
        Self {
            lines: VecDeque::new(),
        }
    }
}

impl<T> FairQueue<T> {
    /// Appends `item` to its flow's line; a new flow joins the rotation last.
    pub(super) fn push(&mut self, flow: u64, item: T) {
        match self.lines.iter_mut().find(|(f, _)| *f == flow) {
            Some((_, line)) => line.push_back(item),
            None => self.lines.push_back((flow, VecDeque::from([item]))),
        }
    }

    /// Takes the next item from the line whose turn it is; that line then
    /// goes to the back of the rotation.
    pub(super) fn pop(&mut self) -> Option<T> {
        let (flow, mut line) = self.lines.pop_front()?;
        let item = line.pop_front();
        if !line.is_empty() {
            self.lines.push_back((flow, line));
        }
        item
    }

    /// Items queued, all flows.
    pub(super) fn len(&self) -> usize {
        self.lines.iter().map(|(_, line)| line.len()).sum()
    }

    /// Items served before a new item of `flow` would be: each other flow's
    /// turns until then, and the flow's own line.
    pub(super) fn ahead_of(&self, flow: u64) -> usize {
        let own = self
            .lines
            .iter()
            .find(|(f, _)| *f == flow)
            .map_or(0, |(_, l)| l.len());
        let others: usize = self
            .lines
            .iter()
            .filter(|(f, _)| *f != flow)
            .map(|(_, line)| line.len().min(own + 1))
            .sum();
        own + others
    }

    /// Keeps the items `keep` accepts; empty lines leave the rotation.
    pub(super) fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) {
        for (_, line) in &mut self.lines {
            line.retain(&mut keep);
        }
        self.lines.retain(|(_, line)| !line.is_empty());
    }

    /// Removes and returns the items `take` selects.
    pub(super) fn extract(&mut self, mut take: impl FnMut(&T) -> bool) -> Vec<T> {
        let mut taken = Vec::new();
        for (_, line) in &mut self.lines {
            let (out, kept): (VecDeque<T>, VecDeque<T>) = line.drain(..).partition(&mut take);
            *line = kept;
            taken.extend(out);
        }
        self.lines.retain(|(_, line)| !line.is_empty());
        taken
    }
}

#[cfg(test)]
mod tests {
    use super::FairQueue;

    #[test]
    fn flows_take_turns_whatever_their_arrival_order() {
        let mut queue = FairQueue::default();
        for i in 0..3 {
            queue.push(1, ("flood", i));
        }
        queue.push(2, ("quiet", 0));
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
            queue.push(1, i);
        }
        assert_eq!(
            queue.ahead_of(2),
            1,
            "one call of the flood, then the newcomer"
        );
        assert_eq!(queue.ahead_of(1), 50);
    }
}
