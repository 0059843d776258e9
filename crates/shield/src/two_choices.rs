//! Where the door sends a listener: the less loaded of two random serving nodes (power of two
//! random choices: nearly as even as asking every node, for the price of two). Sans-IO: the
//! caller draws the two indices and supplies the loads it last heard of.

/// A serving node's load as the door sees it (its last heartbeat).
pub trait Load {
    /// Listeners connected to it.
    fn listeners(&self) -> usize;
    /// Listeners it admits at most.
    fn capacity(&self) -> usize;
}

impl<T: Load + ?Sized> Load for &T {
    fn listeners(&self) -> usize {
        (**self).listeners()
    }
    fn capacity(&self) -> usize {
        (**self).capacity()
    }
}

/// The less loaded of the nodes at `i` and `j` (taken modulo the length; ties go to `i`);
/// `None` when the chosen one is full or there are none.
pub fn two_choices<T: Load>(nodes: &[T], i: usize, j: usize) -> Option<&T> {
    if nodes.is_empty() {
        return None;
    }
    let load = |n: &T| n.listeners() as f64 / n.capacity().max(1) as f64;
    let (a, b) = (&nodes[i % nodes.len()], &nodes[j % nodes.len()]);
    let best = if load(b) < load(a) { b } else { a };
    (best.listeners() < best.capacity()).then_some(best)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    struct Node(&'static str, usize, usize);

    impl Load for Node {
        fn listeners(&self) -> usize {
            self.1
        }
        fn capacity(&self) -> usize {
            self.2
        }
    }

    #[test]
    fn the_door_picks_the_less_loaded_of_two_and_never_a_full_one() {
        let nodes = [Node("light", 10, 100), Node("heavy", 90, 100)];
        assert_eq!(two_choices(&nodes, 0, 1).map(|n| n.0), Some("light"));
        assert_eq!(two_choices(&nodes, 1, 0).map(|n| n.0), Some("light"));
        assert_eq!(two_choices(&nodes, 1, 1).map(|n| n.0), Some("heavy"));
        assert_eq!(two_choices(&nodes, 3, 2).map(|n| n.0), Some("light"), "indices wrap");
        assert!(two_choices(&[Node("full", 100, 100)], 0, 0).is_none(), "full");
        assert!(two_choices::<Node>(&[], 0, 1).is_none());
    }

    #[test]
    fn load_is_relative_to_capacity() {
        let nodes = [Node("small", 50, 100), Node("big", 100, 1_000)];
        assert_eq!(two_choices(&nodes, 0, 1).map(|n| n.0), Some("big"));
    }
}
