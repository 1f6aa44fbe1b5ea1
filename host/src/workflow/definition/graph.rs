//! The step graph: steps are nodes 0..n (file order, 0 the entry), edges
//! go to the steps a step may be followed by. Checks that it has no cycle
//! and that every step is reachable, and computes which steps run before a
//! step on every path (its dominators).

/// A cycle, as the nodes along it: `[a, b, c]` is `a -> b -> c -> a`.
/// Searched depth first from the entry, then from the other steps in file
/// order, so the same file always reports the same cycle.
pub(super) fn find_cycle(edges: &[Vec<usize>]) -> Option<Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnPath,
        Done,
    }
    let mut marks = vec![Mark::New; edges.len()];
    for start in 0..edges.len() {
        if marks[start] != Mark::New {
            continue;
        }
        // The current path, each node with the index of its next edge.
        let mut path: Vec<(usize, usize)> = vec![(start, 0)];
        marks[start] = Mark::OnPath;
        while let Some(&mut (node, ref mut next_edge)) = path.last_mut() {
            let Some(&target) = edges[node].get(*next_edge) else {
                marks[node] = Mark::Done;
                path.pop();
                continue;
            };
            *next_edge += 1;
            match marks[target] {
                Mark::OnPath => {
                    let from = path.iter().position(|&(n, _)| n == target).unwrap_or(0);
                    return Some(path[from..].iter().map(|&(n, _)| n).collect());
                }
                Mark::New => {
                    marks[target] = Mark::OnPath;
                    path.push((target, 0));
                }
                Mark::Done => {}
            }
        }
    }
    None
}

/// Which nodes a path from node 0 reaches.
pub(super) fn reachable(edges: &[Vec<usize>]) -> Vec<bool> {
    let mut seen = vec![false; edges.len()];
    let mut stack = Vec::new();
    if !edges.is_empty() {
        seen[0] = true;
        stack.push(0);
    }
    while let Some(node) = stack.pop() {
        for &target in &edges[node] {
            if !seen[target] {
                seen[target] = true;
                stack.push(target);
            }
        }
    }
    seen
}

/// `dominators[n][d]` is true when every path from node 0 to node `n`
/// passes through `d` (each node dominates itself). Requires an acyclic
/// graph in which node 0 reaches every node.
pub(super) fn dominators(edges: &[Vec<usize>]) -> Vec<Vec<bool>> {
    let n = edges.len();
    let mut predecessors = vec![Vec::new(); n];
    for (from, targets) in edges.iter().enumerate() {
        for &to in targets {
            predecessors[to].push(from);
        }
    }
    // Predecessors come before their successors in a topological order, so
    // one pass settles every set: dom(v) = {v} + the intersection of dom(p)
    // over v's predecessors p.
    let mut dominators = vec![vec![false; n]; n];
    for node in topological_order(edges) {
        let mut set = match predecessors[node].split_first() {
            None => vec![false; n],
            Some((&first, rest)) => {
                let mut set = dominators[first].clone();
                for &p in rest {
                    set.iter_mut().zip(&dominators[p]).for_each(|(d, &other)| *d &= other);
                }
                set
            }
        };
        set[node] = true;
        dominators[node] = set;
    }
    dominators
}

/// The nodes reachable from node 0, each after all of its predecessors
/// (reverse depth-first post-order).
fn topological_order(edges: &[Vec<usize>]) -> Vec<usize> {
    let mut visited = vec![false; edges.len()];
    let mut post_order = Vec::with_capacity(edges.len());
    if edges.is_empty() {
        return post_order;
    }
    let mut stack = vec![(0, 0)];
    visited[0] = true;
    while let Some(&mut (node, ref mut next_edge)) = stack.last_mut() {
        match edges[node].get(*next_edge) {
            Some(&target) => {
                *next_edge += 1;
                if !visited[target] {
                    visited[target] = true;
                    stack.push((target, 0));
                }
            }
            None => {
                post_order.push(node);
                stack.pop();
            }
        }
    }
    post_order.reverse();
    post_order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_cycles_and_their_order() {
        assert_eq!(find_cycle(&[vec![1], vec![2], vec![]]), None);
        assert_eq!(find_cycle(&[vec![1], vec![2], vec![1]]), Some(vec![1, 2]));
        assert_eq!(find_cycle(&[vec![0]]), Some(vec![0]));
        // Diamond: not a cycle.
        assert_eq!(find_cycle(&[vec![1, 2], vec![3], vec![3], vec![]]), None);
        // A cycle not reachable from the entry is found too.
        assert_eq!(find_cycle(&[vec![], vec![2], vec![1]]), Some(vec![1, 2]));
    }

    #[test]
    fn reachability_starts_at_the_entry() {
        assert_eq!(reachable(&[vec![2], vec![2], vec![]]), [true, false, true]);
    }

    #[test]
    fn dominators_of_a_diamond_and_a_chain() {
        // 0 -> {1, 2} -> 3 -> 4
        let edges = [vec![1, 2], vec![3], vec![3], vec![4], vec![]];
        let dom = dominators(&edges);
        assert_eq!(dom[3], [true, false, false, true, false]);
        assert_eq!(dom[4], [true, false, false, true, true]);
        assert_eq!(dom[1], [true, true, false, false, false]);
        // 0 -> 1 -> 2 and 0 -> 2: 1 does not dominate 2.
        let dom = dominators(&[vec![1, 2], vec![2], vec![]]);
        assert_eq!(dom[2], [true, false, true]);
    }
}
