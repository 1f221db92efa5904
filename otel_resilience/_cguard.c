/* A leaf guard's hand-off of its success to the current client span, in C:
 * otel_resilience._context.hand_success_to_span, statement for statement.
 *
 * Why C: a guarded Redis command runs this on every call on a CLOSED breaker (about 60
 * Python bytecodes and a frame); here it is a few dictionary and attribute lookups.
 *
 * How it stays the same as the Python function: a HandSuccess holds the objects the Python
 * function reads (the context getter, SPAN_KEY, SPAN_COUNTERS, GUARDED_SPANS, CLIENT, the
 * bound of the table) and the Python function itself (``twin``). Before it changes
 * anything it reads the span as Python would, and it hands the call to ``twin`` whenever it
 * could not (no SDK span fields, a context that is not the SDK's Context): ``twin`` then
 * does the whole call. The rare steps after a change (``mark_guarded_span``, dropping the
 * oldest half of a full table) call the same Python functions as the Python path does.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>

static PyObject *s_kind, *s_context, *s_span_processor, *s_end_time;

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *twin;           /* _context.hand_success_to_span in Python */
    PyObject *get_context;    /* _sdk.get_current_context */
    PyObject *context_type;   /* opentelemetry.context.Context: its ``get`` is dict.get */
    PyObject *span_key;       /* _sdk.SPAN_KEY */
    PyObject *span_counters;  /* _context.SPAN_COUNTERS (a dict) */
    PyObject *guarded_spans;  /* _context.GUARDED_SPANS (a dict) */
    PyObject *client;         /* SpanKind.CLIENT */
    PyObject *forget_oldest;  /* _context._forget_oldest */
    PyObject *mark;           /* _context.mark_guarded_span */
    Py_ssize_t max_spans;     /* _context.MAX_GUARDED_SPANS */
} HandSuccess;

#define N_OBJECTS 9

static PyObject **
objects(HandSuccess *self, int index)
{
    PyObject **all[N_OBJECTS] = {
        &self->twin, &self->get_context, &self->context_type, &self->span_key,
        &self->span_counters, &self->guarded_spans, &self->client, &self->forget_oldest,
        &self->mark,
    };
    return all[index];
}

static PyObject *
twin(HandSuccess *self, PyObject *const *args)
{
    return PyObject_Vectorcall(self->twin, args, 2, NULL);
}

/* ``mark_guarded_span(span_context, name)``; answers None. */
static PyObject *
mark(HandSuccess *self, PyObject *span_context, PyObject *name)
{
    PyObject *args[2] = {span_context, name};
    PyObject *result = PyObject_Vectorcall(self->mark, args, 2, NULL);
    if (result == NULL) {
        return NULL;
    }
    Py_DECREF(result);
    Py_RETURN_NONE;
}

static PyObject *
hand_success(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    HandSuccess *self = (HandSuccess *)callable;
    PyObject *context, *span, *kind = NULL, *span_context = NULL, *pipeline = NULL;
    PyObject *ended = NULL, *entry, *id, *held, *result = NULL;
    int counted;
    if (PyVectorcall_NARGS(nargsf) != 2 || (kwnames != NULL && PyTuple_GET_SIZE(kwnames))) {
        return PyObject_Vectorcall(self->twin, args, nargsf, kwnames);
    }
    context = PyObject_CallNoArgs(self->get_context);
    if (context == NULL) {
        return NULL;  /* as the Python function: an error of the getter propagates */
    }
    if ((PyObject *)Py_TYPE(context) != self->context_type) {
        Py_DECREF(context);
        return twin(self, args);
    }
    span = PyDict_GetItemWithError(context, self->span_key);
    if (span == NULL) {
        Py_DECREF(context);
        if (PyErr_Occurred()) {
            return NULL;
        }
        Py_RETURN_NONE;
    }
    Py_INCREF(span);
    Py_DECREF(context);
    if (span == Py_None) {
        Py_DECREF(span);
        Py_RETURN_NONE;
    }
    /* The SDK span's fields; without them (another span class), the Python path. */
    kind = PyObject_GetAttr(span, s_kind);
    if (kind != NULL) {
        span_context = PyObject_GetAttr(span, s_context);
    }
    if (span_context != NULL) {
        pipeline = PyObject_GetAttr(span, s_span_processor);
    }
    if (pipeline != NULL) {
        ended = PyObject_GetAttr(span, s_end_time);
    }
    Py_DECREF(span);
    if (ended == NULL) {
        Py_XDECREF(kind);
        Py_XDECREF(span_context);
        Py_XDECREF(pipeline);
        if (!PyErr_ExceptionMatches(PyExc_AttributeError)) {
            return NULL;  /* as the Python function, which catches AttributeError only */
        }
        PyErr_Clear();
        return twin(self, args);
    }
    if (kind != self->client) {
        result = Py_None;
        Py_INCREF(result);
        goto done;
    }
    if (ended == Py_None) {
        counted = PyDict_Contains(self->span_counters, pipeline);
        if (counted < 0) {
            goto done;
        }
        if (counted) {
            if (PyDict_GET_SIZE(self->guarded_spans) >= self->max_spans) {
                PyObject *dropped = PyObject_CallOneArg(self->forget_oldest, self->guarded_spans);
                if (dropped == NULL) {
                    goto done;
                }
                Py_DECREF(dropped);
            }
            entry = PyTuple_Pack(3, span_context, args[0], args[1]);
            if (entry == NULL) {
                goto done;
            }
            id = PyLong_FromVoidPtr(span_context);
            if (id == NULL) {
                Py_DECREF(entry);
                goto done;
            }
            held = PyDict_SetDefault(self->guarded_spans, id, entry);
            Py_DECREF(id);
            if (held == NULL) {
                Py_DECREF(entry);
                goto done;
            }
            if (held == entry) {
                result = entry;
                goto done;
            }
            Py_DECREF(entry);
        }
    }
    result = mark(self, span_context, args[0]);
done:
    Py_DECREF(kind);
    Py_DECREF(span_context);
    Py_DECREF(pipeline);
    Py_DECREF(ended);
    return result;
}

static PyObject *
HandSuccess_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {
        "twin", "get_context", "context_type", "span_key", "SPAN_COUNTERS", "GUARDED_SPANS",
        "CLIENT", "forget_oldest", "mark_guarded_span", "max_spans", NULL,
    };
    PyObject *values[N_OBJECTS];
    Py_ssize_t max_spans;
    HandSuccess *self;
    int i;
    if (!PyArg_ParseTupleAndKeywords(
            args, kwargs, "$OOO!OO!O!OOOn:HandSuccess", kwlist, &values[0], &values[1],
            &PyType_Type, &values[2], &values[3], &PyDict_Type, &values[4], &PyDict_Type,
            &values[5], &values[6], &values[7], &values[8], &max_spans)) {
        return NULL;
    }
    if (!PyDict_CheckExact(values[4]) || !PyDict_CheckExact(values[5])) {
        PyErr_SetString(PyExc_TypeError, "SPAN_COUNTERS and GUARDED_SPANS must be dicts");
        return NULL;
    }
    if (!PyType_IsSubtype((PyTypeObject *)values[2], &PyDict_Type)) {
        PyErr_SetString(PyExc_TypeError, "context_type must be a dict type");
        return NULL;
    }
    {
        /* A context's span is read as dict.get does only where its ``get`` is dict.get. */
        PyObject *get = PyObject_GetAttrString(values[2], "get");
        PyObject *dict_get = PyObject_GetAttrString((PyObject *)&PyDict_Type, "get");
        int same = get != NULL && get == dict_get;
        Py_XDECREF(get);
        Py_XDECREF(dict_get);
        if (PyErr_Occurred()) {
            return NULL;
        }
        if (!same) {
            PyErr_SetString(PyExc_TypeError, "context_type must keep dict.get");
            return NULL;
        }
    }
    self = PyObject_GC_New(HandSuccess, type);
    if (self == NULL) {
        return NULL;
    }
    self->vectorcall = hand_success;
    self->max_spans = max_spans;
    for (i = 0; i < N_OBJECTS; i++) {
        Py_INCREF(values[i]);
        *objects(self, i) = values[i];
    }
    PyObject_GC_Track(self);
    return (PyObject *)self;
}

static int
HandSuccess_traverse(HandSuccess *self, visitproc visit, void *arg)
{
    int i;
    for (i = 0; i < N_OBJECTS; i++) {
        Py_VISIT(*objects(self, i));
    }
    return 0;
}

static int
HandSuccess_clear(HandSuccess *self)
{
    int i;
    for (i = 0; i < N_OBJECTS; i++) {
        Py_CLEAR(*objects(self, i));
    }
    return 0;
}

static void
HandSuccess_dealloc(HandSuccess *self)
{
    PyObject_GC_UnTrack(self);
    HandSuccess_clear(self);
    PyObject_GC_Del(self);
}

static PyTypeObject HandSuccessType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "otel_resilience._cguard.HandSuccess",
    .tp_doc = PyDoc_STR("_context.hand_success_to_span in C."),
    .tp_basicsize = sizeof(HandSuccess),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_new = HandSuccess_new,
    .tp_dealloc = (destructor)HandSuccess_dealloc,
    .tp_traverse = (traverseproc)HandSuccess_traverse,
    .tp_clear = (inquiry)HandSuccess_clear,
    .tp_vectorcall_offset = offsetof(HandSuccess, vectorcall),
    .tp_call = PyVectorcall_Call,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "otel_resilience._cguard",
    "A leaf guard's hand-off of its success to its span, in C (otel_resilience._context).",
    -1, NULL,
};

PyMODINIT_FUNC
PyInit__cguard(void)
{
    PyObject *m;
    s_kind = PyUnicode_InternFromString("_kind");
    s_context = PyUnicode_InternFromString("_context");
    s_span_processor = PyUnicode_InternFromString("_span_processor");
    s_end_time = PyUnicode_InternFromString("_end_time");
    if (s_kind == NULL || s_context == NULL || s_span_processor == NULL || s_end_time == NULL) {
        return NULL;
    }
    if (PyType_Ready(&HandSuccessType) < 0) {
        return NULL;
    }
    m = PyModule_Create(&module);
    if (m == NULL) {
        return NULL;
    }
    Py_INCREF(&HandSuccessType);
    if (PyModule_AddObject(m, "HandSuccess", (PyObject *)&HandSuccessType) < 0) {
        Py_DECREF(&HandSuccessType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
