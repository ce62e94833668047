"""Conjugate gradient on lists of tensors: iMAML's implicit solve and TRPO's natural gradient."""

import tensorflow as tf


def dot(a, b):
    """The inner product of two lists of tensors shaped alike."""
    return tf.add_n([tf.reduce_sum(x * y) for x, y in zip(a, b)])


def conjugate_gradient(apply, b, steps):
    """`steps` iterations of conjugate gradient for `apply(x) = b`, from `x = 0`.

    `apply` is a symmetric positive definite linear map on lists of tensors
    shaped as `b`. A residual that reaches 0 stays there (no division by zero).
    """
    x = [tf.zeros_like(t) for t in b]
    r, p = list(b), list(b)
    rr = dot(r, r)
    for _ in range(steps):
        ap = apply(p)
        alpha = tf.math.divide_no_nan(rr, dot(p, ap))
        x = [xi + alpha * pi for xi, pi in zip(x, p)]
        r = [ri - alpha * api for ri, api in zip(r, ap)]
        rr_next = dot(r, r)
        beta = tf.math.divide_no_nan(rr_next, rr)
        p = [ri + beta * pi for ri, pi in zip(r, p)]
        rr = rr_next
    return x
