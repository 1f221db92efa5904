/* The span processor's on_end fast path in C: otel_resilience._processor._FAST_ON_END,
 * statement for statement, for the span shape the SDK makes (its attributes a dict).
 *
 * Why C: on_end runs for every span a service ends, on the application's thread, and the
 * Python fast path costs about 135 bytecodes per client span; on a real Redis GET that is
 * most of what the span processor adds. This does the same work in a few hundred machine
 * instructions.
 *
 * How it stays the same as the Python path: a FastOnEnd holds the very objects the Python
 * path was compiled with (its memo, its last-seen cell, GUARDED_SPANS, the processor's
 * general path...) and the Python path itself (``twin``). Every shape of span this code
 * does not read exactly as Python would (attributes that are not a plain dict, a str
 * subclass where a URL is read, a span whose fields are missing) goes to ``twin`` before
 * anything changed, so the answer is by construction the Python one. Errors are handled as
 * the Python path's ``except Exception as exc: log_error(exc)``: any Exception is logged
 * through ``log_error`` and swallowed, a BaseException (KeyboardInterrupt) propagates.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>

/* Interned attribute names and attribute keys, made once at import. */
static PyObject *s_kind, *s_attributes, *s_dict, *s_status, *s_status_code, *s_scope,
    *s_context, *s_steady_ring, *s_steady, *s_fast_successes, *s_record_success, *s_state,
    *s_end_and_compile, *s_classifier, *s_auto_discover, *s_discovered, *s_max_discovered,
    *s_url_full, *s_http_url, *s_http_response_status_code, *s_http_status_code,
    *s_error_type, *s_slashes;
/* collections.OrderedDict: the SDK's attribute dicts are plain dicts or, in some releases,
 * OrderedDicts, whose ``get`` is dict.get (so a lookup here reads them as Python does). */
static PyObject *ordered_dict;

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *twin;          /* the Python fast path: spans of another shape go there */
    PyObject *keys;          /* tuple of the classifier's attribute keys */
    Py_ssize_t address[2];   /* indices in keys of the server address sources, or -1 */
    int uses_url;            /* whether the key takes the URL when no address is set */
    PyObject *client, *closed, *disabled, *error;
    PyObject *guarded_spans; /* _context.GUARDED_SPANS (a dict) */
    PyObject *pop, *unmatched, *classifier, *registry, *general, *fast_target;
    PyObject *guarded_var;   /* _context.GUARDED (a ContextVar) */
    PyObject *log_error, *memo, *last_seen, *processor;
} FastOnEnd;

#define N_OBJECTS 18

static PyObject **
objects(FastOnEnd *self, int index)
{
    PyObject **all[N_OBJECTS] = {
        &self->twin, &self->keys, &self->client, &self->closed, &self->disabled,
        &self->error, &self->guarded_spans, &self->pop, &self->unmatched, &self->classifier,
        &self->registry, &self->general, &self->fast_target, &self->guarded_var,
        &self->log_error, &self->memo, &self->last_seen, &self->processor,
    };
    return all[index];
}

/* The Python path's ``except Exception as exc: log_error(exc)``: NULL with an error set
 * comes here; an Exception is logged and swallowed (None), anything else propagates. */
static PyObject *
handled(FastOnEnd *self)
{
    PyObject *type, *value, *traceback, *logged;
    if (!PyErr_ExceptionMatches(PyExc_Exception)) {
        return NULL;
    }
    PyErr_Fetch(&type, &value, &traceback);
    PyErr_NormalizeException(&type, &value, &traceback);
    if (traceback != NULL && value != NULL) {
        PyException_SetTraceback(value, traceback);
    }
    logged = PyObject_CallOneArg(self->log_error, value != NULL ? value : Py_None);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(traceback);
    if (logged == NULL) {
        return NULL;
    }
    Py_DECREF(logged);
    Py_RETURN_NONE;
}

/* ``general(span, guarded_span)``, its result or its error handled. */
static PyObject *
call_general(FastOnEnd *self, PyObject *span, PyObject *guarded_span)
{
    PyObject *args[2] = {span, guarded_span};
    PyObject *result = PyObject_Vectorcall(self->general, args, 2, NULL);
    return result != NULL ? result : handled(self);
}

/* ``processor._end_and_compile(span)``. */
static PyObject *
end_and_compile(FastOnEnd *self, PyObject *span)
{
    PyObject *args[2] = {self->processor, span};
    PyObject *result = PyObject_VectorcallMethod(
        s_end_and_compile, args, 2 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    return result != NULL ? result : handled(self);
}

/* ``count_success(breaker)``: ``next(breaker._fast_successes)`` on a steady ring, else
 * ``breaker.record_success()``. 0, or -1 with an error set. */
static int
count_success(PyObject *breaker)
{
    PyObject *ring, *steady, *counter, *counted;
    int is_steady;
    ring = PyObject_GetAttr(breaker, s_steady_ring);
    if (ring == NULL) {
        return -1;
    }
    steady = PyObject_GetAttr(ring, s_steady);
    Py_DECREF(ring);
    if (steady == NULL) {
        return -1;
    }
    is_steady = PyObject_IsTrue(steady);
    Py_DECREF(steady);
    if (is_steady < 0) {
        return -1;
    }
    if (is_steady) {
        counter = PyObject_GetAttr(breaker, s_fast_successes);
        if (counter == NULL) {
            return -1;
        }
        if (!PyIter_Check(counter)) {
            PyErr_Format(PyExc_TypeError, "'%.200s' object is not an iterator",
                         Py_TYPE(counter)->tp_name);
            Py_DECREF(counter);
            return -1;
        }
        counted = PyIter_Next(counter);
        Py_DECREF(counter);
        if (counted == NULL) {
            if (!PyErr_Occurred()) {
                PyErr_SetNone(PyExc_StopIteration);
            }
            return -1;
        }
        Py_DECREF(counted);
        return 0;
    }
    counted = PyObject_CallMethodNoArgs(breaker, s_record_success);
    if (counted == NULL) {
        return -1;
    }
    Py_DECREF(counted);
    return 0;
}

/* ``GUARDED_SPANS.pop(id(context), None)`` (one step: nothing runs Python in between). */
static PyObject *
pop_guarded(FastOnEnd *self, PyObject *context)
{
    PyObject *id = PyLong_FromVoidPtr(context), *found;
    if (id == NULL) {
        return NULL;
    }
    found = PyDict_GetItemWithError(self->guarded_spans, id);
    if (found == NULL) {
        Py_DECREF(id);
        if (PyErr_Occurred()) {
            return NULL;
        }
        Py_RETURN_NONE;
    }
    Py_INCREF(found);
    if (PyDict_DelItem(self->guarded_spans, id) < 0) {
        Py_DECREF(id);
        Py_DECREF(found);
        return NULL;
    }
    Py_DECREF(id);
    return found;
}

/* An attribute value of a plain dict (borrowed), None when absent; NULL with an error. */
static PyObject *
attribute(PyObject *attributes, PyObject *key)
{
    PyObject *value = PyDict_GetItemWithError(attributes, key);
    if (value == NULL && !PyErr_Occurred()) {
        return Py_None;
    }
    return value;
}

/* The key lines' URL: 1 with *url set (a new reference, or None), 0 when a value is a str
 * subclass (the twin reads it, through its methods), -1 with an error set. */
static int
url_part(PyObject *attributes, PyObject **url)
{
    PyObject *value = NULL, *candidates[2] = {s_url_full, s_http_url};
    Py_ssize_t start, end, length;
    int i;
    for (i = 0; i < 2; i++) {
        value = attribute(attributes, candidates[i]);
        if (value == NULL) {
            return -1;
        }
        if (PyUnicode_Check(value) && !PyUnicode_CheckExact(value)) {
            return 0;
        }
        if (PyUnicode_CheckExact(value) && PyUnicode_GET_LENGTH(value) > 0) {
            break;
        }
        value = NULL;
    }
    if (value == NULL) {
        Py_INCREF(Py_None);
        *url = Py_None;
        return 1;
    }
    length = PyUnicode_GET_LENGTH(value);
    start = PyUnicode_Find(value, s_slashes, 0, length, 1);
    if (start == -2) {
        return -1;
    }
    if (start >= 0) {
        end = start + 2 <= length ? PyUnicode_FindChar(value, '/', start + 2, length, 1) : -1;
        if (end == -2) {
            return -1;
        }
        if (end >= 0) {
            *url = PyUnicode_Substring(value, 0, end);
            return *url == NULL ? -1 : 1;
        }
    }
    Py_INCREF(value);
    *url = value;
    return 1;
}

/* The classifier's key: 1 with *key set, 0 for the twin, -1 with an error set. */
static int
classifier_key(FastOnEnd *self, PyObject *attributes, PyObject **key)
{
    Py_ssize_t n = PyTuple_GET_SIZE(self->keys), i;
    PyObject *values[64], *url = NULL, *tuple;
    int with_url = 0, found;
    if (n > 64) {
        return 0;
    }
    for (i = 0; i < n; i++) {
        values[i] = attribute(attributes, PyTuple_GET_ITEM(self->keys, i));
        if (values[i] == NULL) {
            return -1;
        }
    }
    if (self->uses_url && (self->address[0] < 0 || values[self->address[0]] == Py_None)
        && (self->address[1] < 0 || values[self->address[1]] == Py_None)) {
        found = url_part(attributes, &url);
        if (found <= 0) {
            return found;
        }
        with_url = 1;
    }
    tuple = PyTuple_New(n + with_url);
    if (tuple == NULL) {
        Py_XDECREF(url);
        return -1;
    }
    for (i = 0; i < n; i++) {
        Py_INCREF(values[i]);
        PyTuple_SET_ITEM(tuple, i, values[i]);
    }
    if (with_url) {
        PyTuple_SET_ITEM(tuple, n, url);
    }
    *key = tuple;
    return 1;
}

/* ``guarded == name or (type(guarded) is tuple and name in guarded)``: 1, 0 or -1. */
static int
names(PyObject *guarded, PyObject *name)
{
    int equal = PyObject_RichCompareBool(guarded, name, Py_EQ);
    if (equal != 0) {
        return equal;
    }
    if (Py_IS_TYPE(guarded, &PyTuple_Type)) {
        return PySequence_Contains(guarded, name);
    }
    return 0;
}

/* ``a == b`` as Python's ``==`` answers it (no identity shortcut): 1, 0 or -1. */
static int
equals(PyObject *a, PyObject *b)
{
    PyObject *result = PyObject_RichCompare(a, b, Py_EQ);
    int truth;
    if (result == NULL) {
        return -1;
    }
    truth = PyObject_IsTrue(result);
    Py_DECREF(result);
    return truth;
}

/* A span of the SDK's shape: _FAST_ON_END from ``last = last_seen[0]`` on. Owns none of
 * its arguments. */
static PyObject *
known_shape(FastOnEnd *self, PyObject *span, PyObject *attributes, PyObject *code,
            PyObject *scope, PyObject *key)
{
    PyObject *last, *target = NULL, *memo_key = NULL, *id, *name, *seen, *result = NULL;
    PyObject *context = NULL, *guarded_span = NULL, *guarded = NULL, *breaker, *state;
    PyObject *http, *error_type, *ring, *steady;
    int same, truth, is_steady;

    last = PyList_GetItem(self->last_seen, 0);
    if (last == NULL) {
        return handled(self);
    }
    Py_INCREF(last);
    same = 0;
    if (PyTuple_Check(last) && PyTuple_GET_SIZE(last) >= 3
        && PyTuple_GET_ITEM(last, 0) == scope) {
        same = equals(PyTuple_GET_ITEM(last, 1), key);
        if (same < 0) {
            Py_DECREF(last);
            return handled(self);
        }
    }
    if (same) {
        target = PyTuple_GET_ITEM(last, 2);
        Py_INCREF(target);
        Py_DECREF(last);
    }
    else {
        Py_DECREF(last);
        id = PyLong_FromVoidPtr(scope);
        if (id == NULL) {
            return handled(self);
        }
        memo_key = PyTuple_Pack(2, id, key);
        Py_DECREF(id);
        if (memo_key == NULL) {
            return handled(self);
        }
        target = PyDict_GetItemWithError(self->memo, memo_key);
        Py_DECREF(memo_key);
        if (target == NULL && PyErr_Occurred()) {
            if (PyErr_ExceptionMatches(PyExc_TypeError)) {  /* an unhashable value */
                PyErr_Clear();
                return call_general(self, span, self->pop);
            }
            return handled(self);
        }
        Py_XINCREF(target);
        if (target == NULL || target == Py_None || !PyTuple_Check(target)
            || PyTuple_GET_SIZE(target) < 1 || PyTuple_GET_ITEM(target, 0) != scope) {
            PyObject *args[3] = {scope, attributes, key};
            Py_XDECREF(target);
            target = PyObject_Vectorcall(self->fast_target, args, 3, NULL);
            if (target == NULL) {
                return handled(self);
            }
        }
        seen = PyTuple_Pack(3, scope, key, target);
        if (seen == NULL || PyList_SetItem(self->last_seen, 0, seen) < 0) {
            Py_DECREF(target);
            return handled(self);
        }
    }
    if (!PyTuple_Check(target) || PyTuple_GET_SIZE(target) < 4) {
        PyErr_SetString(PyExc_TypeError, "a fast-path memo entry is not a 4-tuple");
        Py_DECREF(target);
        return handled(self);
    }
    name = PyTuple_GET_ITEM(target, 1);
    if (name == Py_None) {
        Py_DECREF(target);
        return end_and_compile(self, span);
    }
    if (name == self->unmatched) {
        PyObject *now, *discover, *discovered, *most;
        Py_ssize_t count;
        Py_DECREF(target);
        now = PyObject_GetAttr(self->registry, s_classifier);
        if (now == NULL) {
            return handled(self);
        }
        Py_DECREF(now);
        if (now != self->classifier) {  /* one was declared meanwhile */
            return end_and_compile(self, span);
        }
        discover = PyObject_GetAttr(self->processor, s_auto_discover);
        if (discover == NULL) {
            return handled(self);
        }
        truth = PyObject_IsTrue(discover);
        Py_DECREF(discover);
        if (truth < 0) {
            return handled(self);
        }
        if (truth) {
            discovered = PyObject_GetAttr(self->processor, s_discovered);
            if (discovered == NULL) {
                return handled(self);
            }
            count = PyObject_Length(discovered);
            Py_DECREF(discovered);
            if (count < 0) {
                return handled(self);
            }
            most = PyObject_GetAttr(self->processor, s_max_discovered);
            if (most == NULL) {
                return handled(self);
            }
            id = PyLong_FromSsize_t(count);
            if (id == NULL) {
                Py_DECREF(most);
                return handled(self);
            }
            truth = PyObject_RichCompareBool(id, most, Py_LT);
            Py_DECREF(id);
            Py_DECREF(most);
            if (truth < 0) {
                return handled(self);
            }
            if (truth) {  /* may be discovered */
                return end_and_compile(self, span);
            }
        }
        if (PyDict_GET_SIZE(self->guarded_spans) > 0) {
            context = PyObject_GetAttr(span, s_context);
            if (context == NULL) {
                return handled(self);
            }
            guarded_span = pop_guarded(self, context);
            Py_DECREF(context);
            if (guarded_span == NULL) {
                return handled(self);
            }
            if (guarded_span != Py_None) {
                breaker = PySequence_GetItem(guarded_span, 2);
                if (breaker == NULL) {
                    Py_DECREF(guarded_span);
                    return handled(self);
                }
                if (breaker != Py_None && count_success(breaker) < 0) {
                    Py_DECREF(breaker);
                    Py_DECREF(guarded_span);
                    return handled(self);
                }
                Py_DECREF(breaker);
            }
            Py_DECREF(guarded_span);
        }
        Py_RETURN_NONE;  /* no dependency, and none can be discovered */
    }
    if (PyDict_GET_SIZE(self->guarded_spans) > 0) {
        context = PyObject_GetAttr(span, s_context);
        if (context == NULL) {
            goto error;
        }
        guarded_span = pop_guarded(self, context);
        if (guarded_span == NULL) {
            goto error;
        }
        if (guarded_span != Py_None) {
            PyObject *handed, *marked;
            if (!PyTuple_Check(guarded_span) || PyTuple_GET_SIZE(guarded_span) < 3) {
                PyErr_SetString(PyExc_TypeError, "a GUARDED_SPANS entry is not a 3-tuple");
                goto error;
            }
            handed = PyTuple_GET_ITEM(guarded_span, 2);
            if (handed != Py_None && count_success(handed) < 0) {
                goto error;
            }
            marked = PyTuple_GET_ITEM(guarded_span, 1);
            same = equals(marked, name);
            if (same < 0) {
                goto error;
            }
            if (same && PyTuple_GET_ITEM(guarded_span, 0) == context) {
                result = Py_None;
                Py_INCREF(result);
            }
            else {
                result = call_general(self, span, guarded_span);
            }
            goto done;
        }
        Py_CLEAR(guarded_span);
        Py_CLEAR(context);
    }
    if (PyContextVar_Get(self->guarded_var, NULL, &guarded) < 0) {
        goto error;
    }
    if (guarded == NULL) {
        PyErr_SetObject(PyExc_LookupError, self->guarded_var);
        goto error;
    }
    if (guarded != Py_None) {
        truth = names(guarded, name);
        if (truth < 0) {
            goto error;
        }
        if (truth) {
            result = Py_None;
            Py_INCREF(result);
            goto done;
        }
    }
    truth = PyObject_IsTrue(PyTuple_GET_ITEM(target, 3));
    if (truth < 0) {
        goto error;
    }
    http = Py_None;
    if (truth) {
        http = attribute(attributes, s_http_response_status_code);
        if (http == Py_None) {
            http = attribute(attributes, s_http_status_code);
        }
        if (http == NULL) {
            goto error;
        }
    }
    if (http != Py_None) {
        long status;
        int overflow = 0;
        if (!Py_IS_TYPE(http, &PyLong_Type)) {
            result = call_general(self, span, Py_None);
            goto done;
        }
        status = PyLong_AsLongAndOverflow(http, &overflow);
        if (status == -1 && PyErr_Occurred()) {
            goto error;
        }
        if (overflow != 0 || !(0 < status && status < 400)) {
            result = call_general(self, span, Py_None);
            goto done;
        }
    }
    else {
        truth = code == self->error;
        if (!truth) {
            error_type = attribute(attributes, s_error_type);
            if (error_type == NULL) {
                goto error;
            }
            truth = PyObject_IsTrue(error_type);
            if (truth < 0) {
                goto error;
            }
        }
        if (truth) {
            result = call_general(self, span, Py_None);
            goto done;
        }
    }
    breaker = PyTuple_GET_ITEM(target, 2);
    state = PyObject_GetAttr(breaker, s_state);
    if (state == NULL) {
        goto error;
    }
    Py_DECREF(state);  /* compared by identity only */
    is_steady = 0;
    if (state == self->closed || state == self->disabled) {
        ring = PyObject_GetAttr(breaker, s_steady_ring);
        if (ring == NULL) {
            goto error;
        }
        steady = PyObject_GetAttr(ring, s_steady);
        Py_DECREF(ring);
        if (steady == NULL) {
            goto error;
        }
        is_steady = PyObject_IsTrue(steady);
        Py_DECREF(steady);
        if (is_steady < 0) {
            goto error;
        }
    }
    if (is_steady) {
        PyObject *counter = PyObject_GetAttr(breaker, s_fast_successes), *counted;
        if (counter == NULL) {
            goto error;
        }
        if (!PyIter_Check(counter)) {
            PyErr_Format(PyExc_TypeError, "'%.200s' object is not an iterator",
                         Py_TYPE(counter)->tp_name);
            Py_DECREF(counter);
            goto error;
        }
        counted = PyIter_Next(counter);
        Py_DECREF(counter);
        if (counted == NULL) {
            if (!PyErr_Occurred()) {
                PyErr_SetNone(PyExc_StopIteration);
            }
            goto error;
        }
        Py_DECREF(counted);
        result = Py_None;
        Py_INCREF(result);
    }
    else {
        result = call_general(self, span, Py_None);
    }
    goto done;
error:
    result = handled(self);
done:
    Py_XDECREF(guarded);
    Py_XDECREF(guarded_span);
    Py_XDECREF(context);
    Py_DECREF(target);
    return result;
}

static PyObject *
fast_on_end(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    FastOnEnd *self = (FastOnEnd *)callable;
    PyObject *span, *kind, *holder, *attributes = NULL, *status, *code = NULL, *scope = NULL;
    PyObject *key = NULL, *result;
    int found;
    if (PyVectorcall_NARGS(nargsf) != 1 || (kwnames != NULL && PyTuple_GET_SIZE(kwnames))) {
        return PyObject_Vectorcall(self->twin, args, nargsf, kwnames);
    }
    span = args[0];
    /* The span's fields: any failure to read them, or a shape this code does not read as
     * Python would, goes to the twin, before anything changed. */
    kind = PyObject_GetAttr(span, s_kind);
    if (kind == NULL) {
        goto twin;
    }
    Py_DECREF(kind);  /* compared by identity only */
    holder = PyObject_GetAttr(span, s_attributes);
    if (holder == NULL) {
        goto twin;
    }
    attributes = PyObject_GetAttr(holder, s_dict);
    Py_DECREF(holder);
    if (attributes == NULL
        || !(PyDict_CheckExact(attributes) || (PyObject *)Py_TYPE(attributes) == ordered_dict)) {
        goto twin;
    }
    status = PyObject_GetAttr(span, s_status);
    if (status == NULL) {
        goto twin;
    }
    code = PyObject_GetAttr(status, s_status_code);
    Py_DECREF(status);
    if (code == NULL) {
        goto twin;
    }
    scope = PyObject_GetAttr(span, s_scope);
    if (scope == NULL) {
        goto twin;
    }
    if (kind != self->client) {
        Py_DECREF(attributes);
        Py_DECREF(code);
        Py_DECREF(scope);
        return call_general(self, span, self->pop);
    }
    found = classifier_key(self, attributes, &key);
    if (found == 0) {
        goto twin;
    }
    if (found < 0) {
        result = handled(self);
    }
    else {
        result = known_shape(self, span, attributes, code, scope, key);
        Py_DECREF(key);
    }
    Py_DECREF(attributes);
    Py_DECREF(code);
    Py_DECREF(scope);
    return result;
twin:
    if (PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_Exception)) {
            Py_XDECREF(attributes);
            Py_XDECREF(code);
            Py_XDECREF(scope);
            return NULL;
        }
        PyErr_Clear();
    }
    Py_XDECREF(attributes);
    Py_XDECREF(code);
    Py_XDECREF(scope);
    return PyObject_CallOneArg(self->twin, span);
}

static PyObject *
FastOnEnd_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {
        "twin", "keys", "address_keys", "uses_url", "CLIENT", "CLOSED", "DISABLED", "ERROR",
        "GUARDED_SPANS", "POP", "UNMATCHED", "classifier", "registry", "general",
        "fast_target", "guarded_var", "log_error", "memo", "last_seen", "processor", NULL,
    };
    PyObject *twin, *keys, *address_keys, *client, *closed, *disabled, *error, *guarded_spans;
    PyObject *pop, *unmatched, *classifier, *registry, *general, *fast_target, *guarded_var;
    PyObject *log_error, *memo, *last_seen, *processor;
    int uses_url;
    FastOnEnd *self;
    Py_ssize_t i, j, n;
    if (!PyArg_ParseTupleAndKeywords(
            args, kwargs, "$OO!O!pOOOOO!OOOOOOOOO!O!O:FastOnEnd", kwlist, &twin, &PyTuple_Type,
            &keys, &PyTuple_Type, &address_keys, &uses_url, &client, &closed, &disabled,
            &error, &PyDict_Type, &guarded_spans, &pop, &unmatched, &classifier, &registry,
            &general, &fast_target, &guarded_var, &log_error, &PyDict_Type, &memo,
            &PyList_Type, &last_seen, &processor)) {
        return NULL;
    }
    if (!PyDict_CheckExact(guarded_spans) || !PyDict_CheckExact(memo)
        || !PyList_CheckExact(last_seen) || PyList_GET_SIZE(last_seen) != 1) {
        PyErr_SetString(PyExc_TypeError,
                        "GUARDED_SPANS and memo must be dicts, last_seen a list of one item");
        return NULL;
    }
    if (!PyContextVar_CheckExact(guarded_var)) {
        PyErr_SetString(PyExc_TypeError, "guarded_var must be a ContextVar");
        return NULL;
    }
    n = PyTuple_GET_SIZE(keys);
    if (n > 64 || PyTuple_GET_SIZE(address_keys) > 2) {
        PyErr_SetString(PyExc_ValueError, "at most 64 keys and 2 address keys");
        return NULL;
    }
    for (i = 0; i < n; i++) {
        if (!PyUnicode_CheckExact(PyTuple_GET_ITEM(keys, i))) {
            PyErr_SetString(PyExc_TypeError, "keys must be str");
            return NULL;
        }
    }
    {
        Py_ssize_t address[2] = {-1, -1};
        for (j = 0; j < PyTuple_GET_SIZE(address_keys); j++) {
            for (i = 0; i < n; i++) {
                int equal = PyObject_RichCompareBool(
                    PyTuple_GET_ITEM(keys, i), PyTuple_GET_ITEM(address_keys, j), Py_EQ);
                if (equal < 0) {
                    return NULL;
                }
                if (equal) {
                    address[j] = i;
                    break;
                }
            }
        }
        self = PyObject_GC_New(FastOnEnd, type);
        if (self == NULL) {
            return NULL;
        }
        self->address[0] = address[0];
        self->address[1] = address[1];
    }
    self->vectorcall = fast_on_end;
    self->uses_url = uses_url;
    {
        PyObject *values[N_OBJECTS] = {
            twin, keys, client, closed, disabled, error, guarded_spans, pop, unmatched,
            classifier, registry, general, fast_target, guarded_var, log_error, memo,
            last_seen, processor,
        };
        for (i = 0; i < N_OBJECTS; i++) {
            Py_INCREF(values[i]);
            *objects(self, (int)i) = values[i];
        }
    }
    PyObject_GC_Track(self);
    return (PyObject *)self;
}

static int
FastOnEnd_traverse(FastOnEnd *self, visitproc visit, void *arg)
{
    int i;
    for (i = 0; i < N_OBJECTS; i++) {
        Py_VISIT(*objects(self, i));
    }
    return 0;
}

static int
FastOnEnd_clear(FastOnEnd *self)
{
    int i;
    for (i = 0; i < N_OBJECTS; i++) {
        Py_CLEAR(*objects(self, i));
    }
    return 0;
}

static void
FastOnEnd_dealloc(FastOnEnd *self)
{
    PyObject_GC_UnTrack(self);
    FastOnEnd_clear(self);
    PyObject_GC_Del(self);
}

static PyTypeObject FastOnEndType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "otel_resilience._conend.FastOnEnd",
    .tp_doc = PyDoc_STR("The span processor's on_end fast path (see _processor._FAST_ON_END)."),
    .tp_basicsize = sizeof(FastOnEnd),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_new = FastOnEnd_new,
    .tp_dealloc = (destructor)FastOnEnd_dealloc,
    .tp_traverse = (traverseproc)FastOnEnd_traverse,
    .tp_clear = (inquiry)FastOnEnd_clear,
    .tp_vectorcall_offset = offsetof(FastOnEnd, vectorcall),
    .tp_call = PyVectorcall_Call,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "otel_resilience._conend",
    "The span processor's on_end fast path in C (otel_resilience._processor).", -1, NULL,
};

static int
intern(PyObject **target, const char *text)
{
    *target = PyUnicode_InternFromString(text);
    return *target == NULL ? -1 : 0;
}

PyMODINIT_FUNC
PyInit__conend(void)
{
    PyObject *m;
    if (intern(&s_kind, "_kind") || intern(&s_attributes, "_attributes")
        || intern(&s_dict, "_dict") || intern(&s_status, "_status")
        || intern(&s_status_code, "_status_code") || intern(&s_scope, "_instrumentation_scope")
        || intern(&s_context, "_context") || intern(&s_steady_ring, "_steady_ring")
        || intern(&s_steady, "steady") || intern(&s_fast_successes, "_fast_successes")
        || intern(&s_record_success, "record_success") || intern(&s_state, "_state")
        || intern(&s_end_and_compile, "_end_and_compile")
        || intern(&s_classifier, "_classifier") || intern(&s_auto_discover, "auto_discover")
        || intern(&s_discovered, "_discovered") || intern(&s_max_discovered, "max_discovered")
        || intern(&s_url_full, "url.full") || intern(&s_http_url, "http.url")
        || intern(&s_http_response_status_code, "http.response.status_code")
        || intern(&s_http_status_code, "http.status_code") || intern(&s_error_type, "error.type")
        || intern(&s_slashes, "//")) {
        return NULL;
    }
    {
        PyObject *collections = PyImport_ImportModule("collections");
        if (collections == NULL) {
            return NULL;
        }
        ordered_dict = PyObject_GetAttrString(collections, "OrderedDict");
        Py_DECREF(collections);
        if (ordered_dict == NULL) {
            return NULL;
        }
    }
    if (PyType_Ready(&FastOnEndType) < 0) {
        return NULL;
    }
    m = PyModule_Create(&module);
    if (m == NULL) {
        return NULL;
    }
    Py_INCREF(&FastOnEndType);
    if (PyModule_AddObject(m, "FastOnEnd", (PyObject *)&FastOnEndType) < 0) {
        Py_DECREF(&FastOnEndType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
