"""Float64 NumPy statements of the papers' equations, independent of vqkeras.

Written from docs/papers.md, not from the library: each function is one equation.
"""

import numpy as np


def squared_distances(x, codebook):
  """||x_i - e_j||^2, [N, K], computed directly (no expansion)."""
  return ((x[:, None, :] - codebook[None, :, :]) ** 2).sum(-1)


def nearest(x, codebook):
  return squared_distances(x, codebook).argmin(-1)


def posterior(x, codebook, temperature=1.0):
  """P(z = j | x) proportional to exp(-||x - e_j||^2 / T), [N, K]."""
  logits = -squared_distances(x, codebook) / temperature
  logits -= logits.max(-1, keepdims=True)
  p = np.exp(logits)
  return p / p.sum(-1, keepdims=True)


def counts_and_sums(x, assignments, num_codes, weights=None):
  """n_j = sum_i w_ij, s_j = sum_i w_ij x_i for assignments [N, m] (each sample 1/m)."""
  n, m = assignments.shape
  w = np.zeros((n, num_codes))
  for i in range(n):
    for l in range(m):
      w[i, assignments[i, l]] += 1.0 / m
  if weights is not None:
    w *= weights[:, None]
  return w.sum(0), w.T @ x


class ReferenceEMA:
  """The reference code's online EM: counts start at 0, sums at the initial codebook."""

  def __init__(self, codebook, decay, epsilon):
    self.codebook = np.array(codebook, np.float64)
    self.count = np.zeros(len(codebook))
    self.sum = self.codebook.copy()
    self.decay, self.epsilon = decay, epsilon

  def step(self, counts, sums):
    k = len(self.codebook)
    self.count = self.decay * self.count + (1 - self.decay) * counts
    self.sum = self.decay * self.sum + (1 - self.decay) * sums
    n = self.count.sum()
    smoothed = (self.count + self.epsilon) / (n + k * self.epsilon) * n
    self.codebook = self.sum / smoothed[:, None]
    return self.codebook


def perplexity(counts):
  p = counts / counts.sum()
  p = p[p > 0]
  return float(np.exp(-(p * np.log(p)).sum()))


def rotation_trick_gradient(x, q, g):
  """The gradient reaching x `[N, d]` through the rotation trick (Fifty et al. 2024) for
  the output's gradient g, float64: lambda R^T g with R = I - 2 w w^T + 2 v u^T, u and v
  the unit x and q, w the unit u + v, lambda = ||q|| / ||x||, written row by row."""
  grads = []
  for xi, qi, gi in zip(*(np.asarray(a, np.float64) for a in (x, q, g))):
    u, v = xi / np.linalg.norm(xi), qi / np.linalg.norm(qi)
    w = (u + v) / np.linalg.norm(u + v)
    rotation = np.eye(len(xi)) - 2 * np.outer(w, w) + 2 * np.outer(v, u)
    grads.append(np.linalg.norm(qi) / np.linalg.norm(xi) * rotation.T @ gi)
  return np.stack(grads)
