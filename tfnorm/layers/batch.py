"""Batch normalization: plain, masked, synchronized, ghost (virtual batch) and renorm."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfnorm import ops
from tfnorm.layers.base import (
    AffineMixin,
    NormalizationLayer,
    check_axis,
    check_bool,
    check_fraction,
    check_int,
    check_mask,
    check_positive,
    initializer,
    register,
    serialize,
    update_moving_average,
)
from tfnorm.ops.layout import scalar

_RENORM_KEYS = ("rmax", "rmin", "dmax")


def _check_renorm_clipping(renorm_clipping):
    if renorm_clipping is None:
        return None
    if not isinstance(renorm_clipping, dict):
        raise ValueError(
            "renorm_clipping must be a dict with keys among "
            f"{list(_RENORM_KEYS)}, received renorm_clipping={renorm_clipping!r}"
        )
    bad = sorted(set(renorm_clipping) - set(_RENORM_KEYS))
    if bad:
        raise ValueError(
            f"renorm_clipping has unknown key(s) {bad}; valid keys are {list(_RENORM_KEYS)}, "
            f"received renorm_clipping={renorm_clipping!r}"
        )
    rmax = renorm_clipping.get("rmax")
    rmin = renorm_clipping.get("rmin")
    dmax = renorm_clipping.get("dmax")
    if rmax is not None and rmax < 1:
        raise ValueError(f"renorm_clipping['rmax'] must be >= 1, received {rmax!r}")
    if rmin is not None and rmax is not None and rmin > rmax:
        raise ValueError(
            f"renorm_clipping['rmin']={rmin!r} must not exceed renorm_clipping['rmax']={rmax!r}"
        )
    if dmax is not None and dmax < 0:
        raise ValueError(f"renorm_clipping['dmax'] must be >= 0, received {dmax!r}")
    return dict(renorm_clipping)


@register("batch", batch_statistics=True, synchronized=True)
class BatchNormalization(AffineMixin, NormalizationLayer):
    r"""Batch normalization, with masks, replica synchronization, ghost batches and renorm.

    In training, each channel is normalized with the mean and variance of the
    current batch (over every axis but ``axis``); moving averages of those
    statistics are kept for inference::

        y = gamma * (x - mean_B) / sqrt(var_B + epsilon) + beta
        moving_mean <- momentum * moving_mean + (1 - momentum) * mean_B
        moving_var  <- momentum * moving_var  + (1 - momentum) * var_B

    Statistics are float32 for half-precision input, and the variance used both
    for normalization and for the moving average is the biased (population)
    one, as in the Keras layer. With channels last and no mask, ghost batch,
    renorm or cross-replica statistics, a training call is one op with a
    hand-written gradient (:func:`tfnorm.ops.batch_norm`).

    Degenerate batches: NaN or inf in the input propagate to the output of
    the channels they touch, but a channel whose batch statistic is not finite
    keeps its moving averages unchanged (the next finite batch updates it), so
    one bad batch cannot silently poison inference. A batch of one sample (and
    no other reduced axis) has variance 0: the output is ``beta``, finite but
    uninformative; prefer GroupNormalization or OnlineNormalization there.

    Modes:

    * ``mask`` (call argument, see below): masked-out positions take no part in
      the statistics (training); the output is normalized everywhere.
    * ``synchronized=True``: under ``tf.distribute``, the statistics are those of
      the global batch: each replica's count, sum and sum of squares (shifted by
      the moving mean) go through one all-reduce.
    * ``virtual_batch_size=v`` (ghost batch norm, Hoffer et al. 2017): in
      training the batch is split into sub-batches of ``v`` samples, each
      normalized with its own statistics; the moving averages take the mean of
      the sub-batch statistics. Inference is unaffected. The batch size must
      be a multiple of ``v``.
    * ``renorm=True`` (batch renormalization, Ioffe 2017): in training
      ``y = gamma * ((x - mean_B) / sigma_B * r + d) + beta`` with
      ``r = clip(sigma_B / sigma, 1/rmax, rmax)`` and
      ``d = clip((mean_B - mu) / sigma, -dmax, dmax)`` treated as constants
      (no gradient), where ``mu``, ``sigma`` are the ``renorm_mean`` and
      ``renorm_stddev`` moving averages kept with ``renorm_momentum``. As in the
      paper's Algorithm 1, the inference statistics are a moving mean and a
      moving *standard deviation* ``sigma_B = sqrt(var_B + epsilon)``
      (``moving_stddev``, with ``momentum``); ``moving_variance`` is derived
      from it, ``max(moving_stddev**2 - epsilon, 0)``, and inference uses the
      moving mean and variance as usual. The weights are laid out as in
      ``keras.layers.BatchNormalization(renorm=True)`` (``gamma``, ``beta``,
      ``moving_mean``, ``moving_variance``, ``moving_stddev``, ``renorm_mean``,
      ``renorm_stddev``), so ``set_weights`` takes a Keras layer's weights; a
      layer saved by tfnorm 0.1.0 (no ``moving_stddev``) loads with
      ``moving_stddev = sqrt(moving_variance + epsilon)`` and its outputs.

    Args:
      axis: channel axis (int) or axes (list of ints). Default -1.
      momentum: moving-average momentum. Default 0.99.
      epsilon: added to the variance. Default 1e-3.
      center: learn an offset ``beta``. Default True.
      scale: learn a scale ``gamma``. Default True.
      synchronized: all-reduce statistics across replicas. Default False.
      virtual_batch_size: ghost batch size, or None. Default None.
      renorm: batch renormalization. Default False.
      renorm_clipping: dict with optional keys ``rmax``, ``rmin``, ``dmax``;
        ``rmin`` defaults to ``1/rmax`` when only ``rmax`` is given; a missing
        key means no clipping on that side. Default None (no clipping).
      renorm_momentum: momentum of ``renorm_mean``/``renorm_stddev``. Default 0.99.
      beta_initializer, gamma_initializer, moving_mean_initializer,
      moving_variance_initializer, beta_regularizer, gamma_regularizer,
      beta_constraint, gamma_constraint: as in ``keras.layers.BatchNormalization``.

    Call arguments:
      inputs: float tensor of rank >= 2.
      training: use batch statistics and update the moving averages. A layer
        with ``trainable=False`` always runs in inference mode.
      mask: optional tensor of rank ``rank(inputs) - 1``, ``True`` (or nonzero)
        where a position counts in the batch statistics. Two shapes are
        accepted: the input's shape without the channel axis (tfnorm's reading:
        ``(N, T)`` for a ``(N, C, T)`` input with ``axis=1``), or the input's
        leading axes, broadcast over the last one, as
        ``keras.layers.BatchNormalization`` reads it and as ``Masking`` or
        ``Embedding(mask_zero=True)`` produce it (``(N, T)`` for a ``(N, T, C)``
        input, whatever ``axis``). With channels last the two are the same.
        When a shape fits both (the axes from the channel axis on have equal
        sizes), tfnorm's reading is used; with sizes unknown until run time,
        the reading is chosen by the run-time shapes in the same way. Any other
        shape is a ValueError (raised while tracing when the shapes are known).
        A numeric mask is read as Keras reads it, nonzero = kept: it is not a
        weight (``0.5`` or ``-2`` count as ``1``). Needs a single channel axis;
        cannot be combined with ``virtual_batch_size`` in training. Ignored in
        inference (its shape is still checked).

    Example:
      >>> import numpy as np, tfnorm
      >>> bn = tfnorm.BatchNormalization()
      >>> y = bn(np.random.rand(8, 4).astype("float32"), training=True)
      >>> tuple(y.shape), bool(abs(float(np.mean(y))) < 1e-5)
      ((8, 4), True)

    Reference:
      S. Ioffe, C. Szegedy. "Batch Normalization: Accelerating Deep Network
      Training by Reducing Internal Covariate Shift." ICML 2015.
      S. Ioffe. "Batch Renormalization: Towards Reducing Minibatch Dependence in
      Batch-Normalized Models." NeurIPS 2017.
      E. Hoffer, I. Hubara, D. Soudry. "Train longer, generalize better." NeurIPS 2017.
    """

    def __init__(
        self,
        axis=-1,
        momentum=0.99,
        epsilon=1e-3,
        center=True,
        scale=True,
        synchronized=False,
        virtual_batch_size=None,
        renorm=False,
        renorm_clipping=None,
        renorm_momentum=0.99,
        beta_initializer="zeros",
        gamma_initializer="ones",
        moving_mean_initializer="zeros",
        moving_variance_initializer="ones",
        beta_regularizer=None,
        gamma_regularizer=None,
        beta_constraint=None,
        gamma_constraint=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.axis = check_axis(axis)
        self.momentum = check_fraction("momentum", momentum)
        self.epsilon = check_positive("epsilon", epsilon)
        self._init_affine(locals())
        self.synchronized = check_bool("synchronized", synchronized)
        if virtual_batch_size is not None:
            check_int("virtual_batch_size", virtual_batch_size, 1)
        self.virtual_batch_size = virtual_batch_size
        self.renorm = check_bool("renorm", renorm)
        self.renorm_clipping = _check_renorm_clipping(renorm_clipping)
        self.renorm_momentum = check_fraction("renorm_momentum", renorm_momentum)
        self.moving_mean_initializer = initializer(
            "moving_mean_initializer", moving_mean_initializer
        )
        self.moving_variance_initializer = initializer(
            "moving_variance_initializer", moving_variance_initializer
        )

    def build(self, input_shape):
        axes = self._resolve_axes(self.axis, input_shape)
        self._axes = axes
        self._reduce = ops.complement(axes, self._built_rank)
        shape = self._param_shape(axes, input_shape)
        self._build_affine(shape)
        self.moving_mean = self._param(
            "moving_mean", shape, self.moving_mean_initializer, trainable=False, aggregation="mean"
        )
        self.moving_variance = self._param(
            "moving_variance",
            shape,
            self.moving_variance_initializer,
            trainable=False,
            aggregation="mean",
        )
        if self.renorm:
            var_init = self.moving_variance_initializer

            def stddev_init(shape, dtype=None):
                return tf.sqrt(tf.convert_to_tensor(var_init(shape, dtype=dtype)))

            state = dict(trainable=False, aggregation="mean")
            self.moving_stddev = self._param("moving_stddev", shape, stddev_init, **state)
            self.renorm_mean = self._param(
                "renorm_mean", shape, self.moving_mean_initializer, **state
            )
            self.renorm_stddev = self._param("renorm_stddev", shape, stddev_init, **state)

    def load_own_variables(self, store):
        """Loads saved weights; renorm weights saved by tfnorm 0.1.0 are migrated.

        tfnorm 0.1.0 kept a moving variance and no ``moving_stddev``: such a
        store has one weight less, and ``moving_stddev`` becomes
        ``sqrt(moving_variance + epsilon)``, the value that reproduces the
        variance the layer was saved with.
        """
        n = len(store.keys())
        if not (self.renorm and n == len(self.weights) - 1):
            return super().load_own_variables(store)
        old = [store[str(i)] for i in range(n)]
        at = [v.path for v in self.weights].index(self.moving_stddev.path)
        variance = np.asarray(old[at - 1], np.float64)  # moving_variance precedes it
        values = old[:at] + [np.sqrt(variance + self.epsilon)] + old[at:]
        for variable, value in zip(self.weights, values):
            variable.assign(np.asarray(value, variable.dtype))

    # ------------------------------------------------------------------------
    def _bshape(self, v, rank=None):
        return self._broadcast(v, self._axes, self._built_rank if rank is None else rank)

    def _cross_replica(self) -> bool:
        """Whether batch statistics are all-reduced across replicas here."""
        return self.synchronized and ops.replicas_in_sync() > 1

    def _batch_moments(self, x, mask):
        """Batch statistics (keepdims, float32) over ``self._reduce``, global when synchronized."""
        if self.synchronized:
            shift = tf.stop_gradient(self._bshape(tf.convert_to_tensor(self.moving_mean)))
            return ops.replica_moments(x, self._reduce, shift=shift, mask=mask)
        return ops.moments(x, self._reduce, mask)

    def call(self, inputs, training=None, mask=None):
        x = inputs
        rank = self._built_rank
        gamma = self._bshape(self.gamma)
        beta = self._bshape(self.beta)
        use_batch = bool(training) and self.trainable
        if mask is not None:
            mask, readings = self._mask_readings(mask, x)
        if not use_batch:
            y, _, _ = ops.batch_norm(
                x,
                self._axes,
                self.gamma,
                self.beta,
                self.epsilon,
                mean=self.moving_mean,
                variance=self.moving_variance,
            )
            return y

        if mask is not None:
            if self.virtual_batch_size is not None:
                raise ValueError(
                    "BatchNormalization: a mask cannot be combined with virtual_batch_size="
                    f"{self.virtual_batch_size}; drop one of them"
                )
            mask = self._mask_weights(mask, x, readings)

        v = self.virtual_batch_size
        if v is not None:
            x_view, reduce_axes = self._ghost_view(x, v)
            pshape = self._ghost_param_shape(rank + 1)
            mean_b, var_b = ops.moments(x_view, reduce_axes)
            gamma_v = None if self.gamma is None else tf.reshape(self.gamma, pshape)
            beta_v = None if self.beta is None else tf.reshape(self.beta, pshape)
            y = self._train_normalize(x_view, mean_b, var_b, gamma_v, beta_v, ghost=True)
            y = tf.reshape(y, tf.shape(x))
            mean_u = tf.reduce_mean(mean_b, 0)
            var_u = tf.reduce_mean(var_b, 0)
        elif mask is None and not self.renorm and not self._cross_replica():
            # the common case: one op with a hand-written gradient
            y, mean_u, var_u = ops.batch_norm(x, self._axes, self.gamma, self.beta, self.epsilon)
        else:
            mean_b, var_b = self._batch_moments(x, mask)
            y = self._train_normalize(x, mean_b, var_b, gamma, beta, ghost=False)
            mean_u, var_u = mean_b, var_b

        mean_u = tf.stop_gradient(mean_u)
        var_u = tf.stop_gradient(var_u)
        update_moving_average(self.moving_mean, mean_u, self.momentum)
        if not self.renorm:
            update_moving_average(self.moving_variance, var_u, self.momentum)
            return y
        std_u = tf.sqrt(var_u + self.epsilon)
        update_moving_average(self.moving_stddev, std_u, self.momentum)
        stddev = tf.convert_to_tensor(self.moving_stddev)
        self.moving_variance.assign(tf.maximum(stddev * stddev - self.epsilon, 0.0))
        update_moving_average(self.renorm_mean, mean_u, self.renorm_momentum)
        update_moving_average(self.renorm_stddev, std_u, self.renorm_momentum)
        return y

    def _train_normalize(self, x, mean_b, var_b, gamma, beta, ghost):
        if not self.renorm:
            return ops.normalize(x, mean_b, var_b, gamma, beta, self.epsilon)
        dt = mean_b.dtype
        std_b = tf.sqrt(var_b + scalar(self.epsilon, dt))
        rank = x.shape.rank
        if ghost:
            shape = self._ghost_param_shape(rank)
            r_mean = tf.reshape(tf.cast(self.renorm_mean, dt), shape)
            r_std = tf.reshape(tf.cast(self.renorm_stddev, dt), shape)
        else:
            r_mean = self._bshape(tf.cast(self.renorm_mean, dt))
            r_std = self._bshape(tf.cast(self.renorm_stddev, dt))
        r_std = tf.maximum(r_std, tf.sqrt(scalar(self.epsilon, dt)))
        r = std_b / r_std
        d = (mean_b - r_mean) / r_std
        clip = self.renorm_clipping or {}
        rmax, rmin, dmax = clip.get("rmax"), clip.get("rmin"), clip.get("dmax")
        if rmin is None and rmax is not None:
            rmin = 1.0 / rmax
        if rmax is not None:
            r = tf.minimum(r, rmax)
        if rmin is not None:
            r = tf.maximum(r, rmin)
        if dmax is not None:
            d = tf.clip_by_value(d, -dmax, dmax)
        r = tf.stop_gradient(r)
        d = tf.stop_gradient(d)
        # gamma * ((x - m) / s * r + d) + beta == normalize with scale gamma*r, offset beta+gamma*d
        g = r if gamma is None else tf.cast(gamma, dt) * r
        b = d if gamma is None else tf.cast(gamma, dt) * d
        if beta is not None:
            b = b + tf.cast(beta, dt)
        return ops.normalize(x, mean_b, var_b, g, b, self.epsilon)

    def _ghost_param_shape(self, rank_v):
        shape = [1] * rank_v
        for a, n in zip(self._axes, self.moving_mean.shape):
            shape[a + 1] = n
        return shape

    def _ghost_view(self, x, v):
        n = x.shape[0]
        if n is not None and n % v:
            raise ValueError(
                f"BatchNormalization: the batch size {n} is not a multiple of "
                f"virtual_batch_size={v}; use a batch size divisible by {v}"
            )
        dyn = tf.shape(x)
        if n is None:
            tf.debugging.assert_equal(
                dyn[0] % v,
                0,
                message=f"BatchNormalization: the batch size must be a multiple of "
                f"virtual_batch_size={v}",
            )
        new_shape = tf.concat([[-1, v], dyn[1:]], 0)
        xv = tf.reshape(x, new_shape)
        static = [None, v] + x.shape.as_list()[1:]
        xv.set_shape(static)
        reduce_axes = [1] + [a + 1 for a in self._reduce if a != 0]
        return xv, reduce_axes

    def _mask_readings(self, mask, x):
        """Checks ``mask`` against ``x`` from static shapes alone (no TensorFlow op runs).

        Returns the mask as a tensor and the list of ``(shape, axis)`` readings
        its static shape fits: ``shape`` is the shape the reading expects and
        ``axis`` where a length-1 axis goes back in to broadcast it over ``x``.
        tfnorm's reading (the input's shape without the channel axis) comes
        first, Keras' (the leading axes, all but the last) second; they are
        one reading when the channel axis is the last one.
        """
        mask = check_mask("BatchNormalization", mask)
        rank = self._built_rank
        x_shape = tuple(x.shape)
        m_shape = tuple(mask.shape) if mask.shape.rank is not None else None
        if m_shape is None or len(m_shape) != rank - 1:
            raise ValueError(
                f"BatchNormalization: mask must have rank {rank - 1} (input rank - 1) for an "
                f"input of shape {x_shape}, received a mask of shape {m_shape}"
            )
        if len(self._axes) != 1:
            raise ValueError(
                f"BatchNormalization: a mask needs a single channel axis, received axis={self.axis!r}"
            )
        c = self._axes[0]
        readings = [(x_shape[:c] + x_shape[c + 1 :], c)]
        if c != rank - 1:
            readings.append((x_shape[:-1], rank - 1))

        def fits(expected):
            return all(m is None or e is None or m == e for m, e in zip(m_shape, expected))

        matching = [r for r in readings if fits(r[0])]
        if not matching:
            accepted = " or ".join(str(r[0]) for r in readings)
            kinds = (
                "the input's shape without the channel axis"
                if len(readings) == 1
                else "the input's shape without the channel axis (tfnorm), or its leading "
                "axes, broadcast over the last one (Keras)"
            )
            raise ValueError(
                f"BatchNormalization: received a mask of shape {m_shape} for an input of shape "
                f"{x_shape} with axis={self.axis!r}; the mask must have shape {accepted}: "
                f"{kinds}"
            )
        return mask, matching

    def _mask_weights(self, mask, x, readings):
        """The mask as 0/1 weights in the statistics dtype, broadcastable to ``x``."""
        w = tf.cast(ops.kept(mask), ops.stats_dtype(x.dtype))
        static = mask.shape.is_fully_defined() and x.shape.is_fully_defined()
        if static:  # the first matching reading is exact: tfnorm's takes precedence
            return tf.expand_dims(w, readings[0][1])

        m_dyn = tf.shape(mask)
        x_dyn = tf.shape(x)

        def exact(axis):
            expected = tf.concat([x_dyn[:axis], x_dyn[axis + 1 :]], 0)
            return tf.reduce_all(tf.equal(m_dyn, expected))

        oks = [exact(axis) for _, axis in readings]
        accepted = " or ".join(str(shape) for shape, _ in readings)
        check = tf.debugging.Assert(
            tf.reduce_any(tf.stack(oks)),
            [
                f"BatchNormalization: the mask must have shape {accepted} for an input of "
                f"shape {tuple(x.shape)}; received a mask of shape",
                m_dyn,
                "for an input of shape",
                x_dyn,
            ],
        )
        with tf.control_dependencies([check]):
            w = tf.identity(w)
        if len(readings) == 1:
            return tf.expand_dims(w, readings[0][1])
        (_, first), (_, second) = readings
        return tf.cond(
            oks[0],
            lambda: tf.broadcast_to(tf.expand_dims(w, first), x_dyn),
            lambda: tf.broadcast_to(tf.expand_dims(w, second), x_dyn),
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "axis": self.axis,
                "momentum": self.momentum,
                "epsilon": self.epsilon,
                "synchronized": self.synchronized,
                "virtual_batch_size": self.virtual_batch_size,
                "renorm": self.renorm,
                "renorm_clipping": self.renorm_clipping,
                "renorm_momentum": self.renorm_momentum,
                "moving_mean_initializer": serialize(self.moving_mean_initializer),
                "moving_variance_initializer": serialize(self.moving_variance_initializer),
                **self._affine_config(),
            }
        )
        return config
